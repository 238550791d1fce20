"""gemini text-to-image against a loopback Vertex AI, labelled by the real champion checkpoint as teacher.

The stub draws a real PPE photograph (or a blank grey frame), so what the teacher keeps is decided by a real model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from feedback.synthesis.cloud.client import ModelUnavailable, image_seed
from feedback.synthesis.cloud.gemini import GeminiImageGenerator
from feedback.synthesis.port import Generator, LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.teachers.port import ChampionTeacher, Teacher
from tests.feedback.synthesis.vertex_stub import VertexStub, stub_calls

MODEL = "gemini-2.5-flash-image"
PROMPT = "A CCTV frame of a construction site at dusk: a worker without a hard hat, bare head, beside scaffolding."
HELMET = 0


def yolo_boxes(image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, xyxy pixels) of a PPE image's verified labels."""
    h, w = cv2.imread(str(image_path)).shape[:2]
    rows = np.loadtxt(image_path.parent.parent / "labels" / f"{image_path.stem}.txt", ndmin=2)
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    return rows[:, 0].astype(int), np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)


def camera_frame(ppe_dir: Path) -> LabelledFrame:
    image = cv2.imread(str(ppe_dir / "val" / "images" / "ppe_000003.jpg"))  # 500x333: the cameras' 3:2
    return LabelledFrame("c" * 64, image, np.zeros((0, 4)), np.zeros(0, int))


def test_kept_with_the_teachers_boxes_where_it_finds_the_target(
    stub: VertexStub, tmp_path: Path, teacher: ChampionTeacher, ppe_dir: Path
) -> None:
    drawn = ppe_dir / "val" / "images" / "ppe_000015.jpg"  # five verified helmets
    stub.text_image = cv2.imread(str(drawn))[..., ::-1].copy()
    gen = GeminiImageGenerator(stub_calls(stub, tmp_path, {MODEL: 0.039}), teacher, MODEL)
    assert isinstance(gen, Generator) and isinstance(teacher, Teacher)
    request = SynthesisRequest(target_class=HELMET, count=2, seed=3, prompt=PROMPT, negative_prompt="text, watermark")
    results = list(gen.generate(request, [camera_frame(ppe_dir)]))

    assert [type(r) for r in results] == [SyntheticImage, SyntheticImage]
    for i, seen in enumerate(stub.seen):
        assert (seen.model, seen.method) == (MODEL, "generateContent")
        parts = seen.body["contents"][0]["parts"]
        assert parts == [{"text": f"{PROMPT}\nDo not show: text, watermark"}]  # text only: nothing to edit
        config = seen.body["generationConfig"]
        assert config["responseModalities"] == ["IMAGE"] and config["seed"] == image_seed(3, i)
        assert config["imageConfig"]["aspectRatio"] == "3:2"
    kept = results[0]
    assert isinstance(kept, SyntheticImage)
    # The teacher's boxes are the image's: its helmets sit on the verified ones.
    classes, verified = yolo_boxes(drawn)
    found = kept.boxes[kept.class_ids == HELMET]
    assert len(found) >= 3
    assert (sv.box_iou_batch(found, verified[classes == HELMET]).max(axis=1) > 0.5).sum() >= 3
    assert kept.lineage["teacher"] == "champion:ppe_base.pt" and kept.lineage["prompt"] == PROMPT
    assert len(kept.lineage["teacher_confidence"]) == len(kept.boxes)


def test_rejected_where_the_teacher_finds_no_target(stub: VertexStub, tmp_path: Path, teacher: ChampionTeacher) -> None:
    # The stub's default drawing is a flat grey frame: nothing in it for the champion.
    gen = GeminiImageGenerator(stub_calls(stub, tmp_path), teacher, MODEL)
    results = list(gen.generate(SynthesisRequest(target_class=1, count=1, prompt=PROMPT), []))
    assert [r.reason for r in results] == ["teacher found no no_helmet"]  # type: ignore[union-attr]
    assert "imageConfig" not in stub.seen[0].body["generationConfig"]  # no camera frame, no ratio asked for


def test_an_answer_in_words_only_is_rejected(stub: VertexStub, tmp_path: Path, teacher: ChampionTeacher) -> None:
    words = {"content": {"role": "model", "parts": [{"text": "I can't create images of real people."}]}}
    stub.reply(200, {"candidates": [words | {"finishReason": "STOP"}]})
    stub.reply(200, {"candidates": [{"finishReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]}]})  # fmt: skip
    gen = GeminiImageGenerator(stub_calls(stub, tmp_path), teacher, MODEL)
    results = list(gen.generate(SynthesisRequest(target_class=0, count=2, prompt=PROMPT), []))
    assert all(isinstance(r, Rejected) for r in results)
    assert results[0].reason == "no image in the answer: I can't create images of real people."  # type: ignore[union-attr]
    assert results[1].reason == "finish reason SAFETY: HARM_CATEGORY_DANGEROUS_CONTENT blocked"  # type: ignore[union-attr]


def test_an_unknown_gemini_model_names_the_setting(stub: VertexStub, tmp_path: Path, teacher: ChampionTeacher) -> None:
    stub.reply(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "Publisher Model `projects/proj/locations/"
                     "us-central1/publishers/google/models/gemini-9-image` was not found or your project does not have "
                     "access to it."}})  # fmt: skip
    gen = GeminiImageGenerator(stub_calls(stub, tmp_path), teacher, "gemini-9-image")
    with pytest.raises(ModelUnavailable, match="check EDGELOOP_GEMINI_IMAGE_MODEL.*gemini-2.5-flash-image"):
        list(gen.generate(SynthesisRequest(target_class=0, count=1, prompt=PROMPT), []))
    assert len(stub.seen) == 1  # a 404 is not retried
