"""gemini-edit against a loopback Vertex AI: what is sent, and labels that hold by construction in what comes back.

The stub answers every edit with a flat magenta square at its own size, so each pixel the edit reached shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from feedback.synthesis.cloud.client import image_seed
from feedback.synthesis.cloud.gemini_edit import GeminiEditGenerator
from feedback.synthesis.port import Generator, LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from tests.feedback.synthesis.vertex_stub import MAGENTA, VertexStub, b64, decode_image, noise_frame, png, stub_calls

MODEL = "gemini-2.5-flash-image"
INSTRUCTION = "Remove the hard hat from this worker's head; show short dark hair. Change nothing else."
# Two helmet heads 4 px apart (each one's feather reaches the other), a vest box holding both, a far helmet.
HEAD_A, HEAD_B, VEST, FAR = [300, 200, 340, 250], [344, 204, 380, 250], [280, 190, 400, 420], [40, 40, 90, 100]
BGR_MAGENTA = np.array(MAGENTA[::-1], np.uint8)


@pytest.fixture
def stub() -> Iterator[VertexStub]:
    with VertexStub() as server:
        yield server


def frame() -> LabelledFrame:
    return LabelledFrame(image_sha256="a" * 64, image=noise_frame(1), boxes=np.array([HEAD_A, HEAD_B, VEST, FAR], float),
                         class_ids=np.array([0, 0, 3, 0]))  # fmt: skip


def generator(stub: VertexStub, root: Path) -> GeminiEditGenerator:
    return GeminiEditGenerator(stub_calls(stub, root, {MODEL: 0.039}), MODEL)


def request(count: int, seed: int = 0) -> SynthesisRequest:
    return SynthesisRequest(target_class=1, count=count, seed=seed, cluster_id="c7", confusable_classes=(0,),
                            edit_instruction=INSTRUCTION)  # fmt: skip


def grown(box: list[int], share: float) -> tuple[int, int, int, int]:
    w, h = box[2] - box[0], box[3] - box[1]
    return (int(np.floor(box[0] - share * w)), int(np.floor(box[1] - share * h)),
            int(np.ceil(box[2] + share * w)), int(np.ceil(box[3] + share * h)))  # fmt: skip


def test_each_image_edits_one_verified_box_and_the_labels_hold(stub: VertexStub, tmp_path: Path) -> None:
    source = frame()
    gen = generator(stub, tmp_path)
    assert isinstance(gen, Generator)
    results = list(gen.generate(request(3), [source]))
    assert all(isinstance(r, SyntheticImage) for r in results) and len(results) == 3
    assert sorted(r.lineage["edited_box_index"] for r in results) == [0, 1, 3]  # every helmet head, once each
    for r in results:
        j = r.lineage["edited_box_index"]
        box = [int(v) for v in source.boxes[j]]
        # Boxes exact by construction: the same boxes, the edited one now of the target class.
        assert np.array_equal(r.boxes, source.boxes)
        expected = source.class_ids.copy()
        expected[j] = 1
        assert np.array_equal(r.class_ids, expected)
        # The edit fills the box (magenta all through it, a pixel in from the edge) ...
        assert np.all(r.image[box[1] + 1 : box[3] - 1, box[0] + 1 : box[2] - 1] == BGR_MAGENTA)
        # ... and no pixel changed further than a quarter of the box's size from it (plus rounding).
        changed = np.any(r.image != source.image, axis=2)
        x1, y1, x2, y2 = grown(box, 0.25)
        outside = changed.copy()
        outside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = False
        assert not outside.any()
        assert changed.sum() > (box[2] - box[0]) * (box[3] - box[1])  # the feather reaches past the box
        # The other head, clear of the edited one, keeps every pixel even where the feather reaches it.
        for k in (0, 1):
            if k != j and j in (0, 1):
                o = [int(v) for v in source.boxes[k]]
                assert np.array_equal(r.image[o[1] : o[3], o[0] : o[2]], source.image[o[1] : o[3], o[0] : o[2]])
        assert r.lineage["source_image_sha256"] == "a" * 64 and r.lineage["cluster_id"] == "c7"
        assert (r.lineage["from_class"], r.lineage["to_class"], r.lineage["model"]) == (0, 1, MODEL)


def test_the_request_carries_the_crop_the_instruction_and_the_seed(stub: VertexStub, tmp_path: Path) -> None:
    source = frame()
    results = list(generator(stub, tmp_path).generate(request(2, seed=11), [source]))
    assert len(stub.seen) == 2
    for i, (seen, r) in enumerate(zip(stub.seen, results, strict=True)):
        assert (seen.model, seen.method, seen.project) == (MODEL, "generateContent", "proj")
        parts = seen.body["contents"][0]["parts"]
        assert [p.get("text") for p in parts if "text" in p] == [INSTRUCTION]
        config = seen.body["generationConfig"]
        assert config["responseModalities"] == ["IMAGE"] and config["seed"] == image_seed(11, i) == r.lineage["seed"]
        assert config["imageConfig"]["aspectRatio"] == "1:1"
        sent = decode_image(next(p["inlineData"]["data"] for p in parts if "inlineData" in p))
        assert sent.shape == (1024, 1024, 3)  # a small head is sent at the model's working size
        # The picture sent is the frame around the edited box: scaled back down it matches the real crop.
        x1, y1, x2, y2 = r.lineage["crop"]
        box = source.boxes[r.lineage["edited_box_index"]]
        assert x1 <= box[0] and y1 <= box[1] and box[2] <= x2 and box[3] <= y2
        real = source.image[y1:y2, x1:x2, ::-1].astype(float)
        back = cv2.resize(sent, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA).astype(float)
        assert np.abs(back - real).mean() < 25  # noise survives a cubic round trip only roughly
        assert np.abs(back - real[::-1]).mean() > 60  # while other noise (the crop upside down) is far off


def test_deterministic_by_seed(stub: VertexStub, tmp_path: Path) -> None:
    a = list(generator(stub, tmp_path / "a").generate(request(3, seed=5), [frame()]))
    b = list(generator(stub, tmp_path / "b").generate(request(3, seed=5), [frame()]))  # no cache shared
    assert len(stub.seen) == 6
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image)  # type: ignore[union-attr]
        assert x.lineage == y.lineage
    assert [s.body for s in stub.seen[:3]] == [s.body for s in stub.seen[3:]]


def test_a_safety_filtered_edit_is_rejected_with_its_reason(stub: VertexStub, tmp_path: Path) -> None:
    stub.reply(
        200, {"candidates": [{"finishReason": "IMAGE_SAFETY", "finishMessage": "Unable to show the generated image."}]}
    )
    stub.reply(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    results = list(generator(stub, tmp_path).generate(request(3), [frame()]))
    assert isinstance(results[0], Rejected) and isinstance(results[1], Rejected)
    assert results[0].reason == "finish reason IMAGE_SAFETY: Unable to show the generated image."
    assert results[1].reason == "prompt blocked: PROHIBITED_CONTENT"
    assert results[0].lineage["edited_box_index"] in (0, 1, 3) and results[0].lineage["cost_usd"] == 0.039
    assert isinstance(results[2], SyntheticImage)


def test_no_instruction_or_no_confusable_box_is_a_clear_error(stub: VertexStub, tmp_path: Path) -> None:
    gen = generator(stub, tmp_path)
    with pytest.raises(ValueError, match="edit_instruction"):
        list(gen.generate(SynthesisRequest(target_class=1, count=1, confusable_classes=(0,)), [frame()]))
    with pytest.raises(ValueError, match=r"no box of classes \(2,\)"):
        list(
            gen.generate(
                SynthesisRequest(target_class=1, count=1, confusable_classes=(2,), edit_instruction="x"), [frame()]
            )
        )
    assert stub.seen == []


def test_draft_images_a_thinking_model_sends_are_not_the_answer(stub: VertexStub, tmp_path: Path) -> None:
    draft = {
        "inlineData": {"mimeType": "image/png", "data": b64(png(np.zeros((64, 64, 3), np.uint8)))},
        "thought": True,
    }
    final = {"inlineData": {"mimeType": "image/png", "data": b64(png(np.full((64, 64, 3), MAGENTA, np.uint8)))}}
    stub.reply(200, {"candidates": [{"content": {"role": "model", "parts": [draft, final]}, "finishReason": "STOP"}]})
    [r] = list(generator(stub, tmp_path).generate(request(1), [frame()]))
    assert isinstance(r, SyntheticImage)
    x1, y1, x2, y2 = (int(v) for v in r.boxes[r.lineage["edited_box_index"]])
    assert np.all(r.image[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == BGR_MAGENTA)
