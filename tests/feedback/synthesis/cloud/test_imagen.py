"""imagen against a loopback Vertex AI: `generate_images` labelled by the champion, `edit_image` inpainting at a box.

Also what a retired Imagen model answers: an error that names the Gemini replacement, sent once, not retried.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from feedback.synthesis.cloud.client import ModelUnavailable, image_seed
from feedback.synthesis.cloud.imagen import ImagenGenerator
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.teachers.port import ChampionTeacher
from tests.feedback.synthesis.vertex_stub import MAGENTA, VertexStub, decode_image, noise_frame, stub_calls

PROMPT = "A worker with a bare head on a building site, seen from a CCTV camera"
INSTRUCTION = "a bare head with short dark hair"
HEAD, OTHER = [300, 200, 340, 250], [60, 60, 100, 110]
RETIRED = {"error": {"code": 404, "status": "NOT_FOUND", "message": "Publisher Model `projects/proj/locations/us-central1"
           "/publishers/google/models/imagen-3.0-generate-002` was not found or your project does not have access to it."}}  # fmt: skip


def frame() -> LabelledFrame:
    return LabelledFrame("b" * 64, noise_frame(2), np.array([HEAD, OTHER], float), np.array([0, 2]))


def inpaint(count: int = 1) -> SynthesisRequest:
    return SynthesisRequest(target_class=1, count=count, seed=2, confusable_classes=(0,), edit_instruction=INSTRUCTION)


def test_generate_images_sends_prompt_seed_and_options_and_the_teacher_labels(
    stub: VertexStub, tmp_path: Path, teacher: ChampionTeacher, ppe_dir: Path
) -> None:
    stub.text_image = cv2.imread(str(ppe_dir / "val" / "images" / "ppe_000017.jpg"))[..., ::-1].copy()
    gen = ImagenGenerator(stub_calls(stub, tmp_path, {"imagen-4.0-generate-001": 0.04}), teacher)
    camera = LabelledFrame("c" * 64, np.zeros((480, 640, 3), np.uint8), np.zeros((0, 4)), np.zeros(0, int))
    request = SynthesisRequest(target_class=0, count=2, seed=1, prompt=PROMPT, negative_prompt="cartoon")
    results = list(gen.generate(request, [camera]))
    assert [type(r) for r in results] == [SyntheticImage, SyntheticImage]
    for i, seen in enumerate(stub.seen):
        assert (seen.model, seen.method) == ("imagen-4.0-generate-001", "predict")
        assert seen.body["instances"] == [{"prompt": PROMPT}]
        assert seen.body["parameters"] == {"sampleCount": 1, "seed": image_seed(1, i), "negativePrompt": "cartoon",
                                           "aspectRatio": "4:3", "addWatermark": False, "includeRaiReason": True}  # fmt: skip
    kept = results[0]
    assert isinstance(kept, SyntheticImage) and (kept.class_ids == 0).sum() >= 1  # the champion's helmets
    assert kept.lineage["model"] == "imagen-4.0-generate-001" and kept.lineage["cost_usd"] == 0.04


def test_edit_image_inpaints_the_box_under_a_mask_and_the_labels_hold(stub: VertexStub, tmp_path: Path) -> None:
    source = frame()
    results = list(ImagenGenerator(stub_calls(stub, tmp_path)).generate(inpaint(), [source]))
    [seen] = stub.seen
    assert (seen.model, seen.method) == ("imagen-3.0-capability-001", "predict")
    [instance] = seen.body["instances"]
    assert instance["prompt"] == INSTRUCTION
    raw, mask = sorted(instance["referenceImages"], key=lambda r: r["referenceId"])
    assert (raw["referenceType"], mask["referenceType"]) == ("REFERENCE_TYPE_RAW", "REFERENCE_TYPE_MASK")
    assert mask["maskImageConfig"] == {"maskMode": "MASK_MODE_USER_PROVIDED", "dilation": 0.01}
    assert seen.body["parameters"] == {"editMode": "EDIT_MODE_INPAINT_INSERTION", "sampleCount": 1,
                                       "seed": image_seed(2, 0), "addWatermark": False, "includeRaiReason": True}  # fmt: skip
    # The mask is white exactly over the head, in the sent crop's coordinates.
    [r] = results
    assert isinstance(r, SyntheticImage)
    white = decode_image(mask["referenceImage"]["bytesBase64Encoded"])[..., 0] > 127
    ys, xs = np.nonzero(white)
    x1, y1, x2, _ = r.lineage["crop"]
    scale = white.shape[1] / (x2 - x1)
    assert decode_image(raw["referenceImage"]["bytesBase64Encoded"]).shape[:2] == white.shape
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / scale + [x1, y1, x1, y1]
    assert np.abs(box - HEAD).max() < 1.0
    assert white.sum() == np.count_nonzero(white[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])  # one rectangle
    # Labels by construction, the edit confined to the head's neighbourhood.
    assert np.array_equal(r.boxes, source.boxes) and r.class_ids.tolist() == [1, 2]
    assert np.all(r.image[201:249, 301:339] == np.array(MAGENTA[::-1], np.uint8))
    changed = np.any(r.image != source.image, axis=2)
    changed[186:264, 289:351] = False  # the head grown by a quarter of its size, and a pixel of rounding
    assert not changed.any()


def test_a_retired_imagen_model_names_its_replacement(
    stub: VertexStub, tmp_path: Path, teacher: ChampionTeacher
) -> None:
    stub.reply(404, RETIRED)
    gen = ImagenGenerator(stub_calls(stub, tmp_path), teacher, model="imagen-3.0-generate-002")
    with pytest.raises(ModelUnavailable) as e:
        list(gen.generate(SynthesisRequest(target_class=0, count=3, prompt=PROMPT), []))
    assert "retired the Imagen models" in str(e.value) and "replacement gemini-2.5-flash-image" in str(e.value)
    assert "EDGELOOP_IMAGEN_MODEL" in str(e.value) and "imagen-3.0-generate-002" in str(e.value)
    assert len(stub.seen) == 1  # not retried, and nothing after it

    stub.reply(400, {"error": {"code": 400, "status": "FAILED_PRECONDITION",
                               "message": "Model imagen-3.0-capability-001 was retired on 2026-06-24."}})  # fmt: skip
    with pytest.raises(ModelUnavailable, match="EDGELOOP_IMAGEN_EDIT_MODEL"):
        list(ImagenGenerator(stub_calls(stub, tmp_path)).generate(inpaint(), [frame()]))
    assert len(stub.seen) == 2


def test_rai_filtered_images_are_rejected_with_the_reason(stub: VertexStub, tmp_path: Path) -> None:
    reason = "Your current safety filter threshold filtered out 1 generated images. Error code 56562880."
    stub.reply(200, {"predictions": [{"raiFilteredReason": reason}]})
    stub.reply(200, {})
    results = list(ImagenGenerator(stub_calls(stub, tmp_path)).generate(inpaint(3), [frame()]))
    assert [type(r) for r in results] == [Rejected, Rejected, SyntheticImage]
    assert results[0].reason == f"RAI filtered: {reason}"  # type: ignore[union-attr]
    assert results[1].reason == "no image in the answer (filtered without a reason)"  # type: ignore[union-attr]


def test_text_to_image_without_a_teacher_is_refused(stub: VertexStub, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a teacher"):
        list(ImagenGenerator(stub_calls(stub, tmp_path)).generate(SynthesisRequest(0, 1, prompt=PROMPT), []))
    assert stub.seen == []
