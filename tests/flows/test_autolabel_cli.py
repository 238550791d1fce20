"""`edgeloop autolabel DIR` with a tiny random GroundingDINO saved as the configured teacher, the oracle reviewing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from feedback.review.labelstudio import prediction
from feedback.review.workflow import load_items
from feedback.teachers.grounding_dino import GroundingDinoTeacher
from flows.cli import app
from store.settings import Settings, Workspace
from tests.feedback.synthesis.tiny_models import grounding_dino

CLASSES = ["helmet", "no_helmet", "person"]


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    model, processor = grounding_dino()
    model.save_pretrained(tmp_path / "gd")
    processor.save_pretrained(tmp_path / "gd")
    for key, value in {"GROUNDING_MODEL": str(tmp_path / "gd"), "GROUNDING_BOX_THRESHOLD": "0.0",
                       "GROUNDING_TEXT_THRESHOLD": "0.0", "CLASS_PHRASES": '{"no_helmet": ["bare head"]}',
                       "FSYNC": "0"}.items():
        monkeypatch.setenv(f"EDGELOOP_{key}", value)
    folder = tmp_path / "new_site"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"frame_{i}.png"), rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    return folder


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_autolabel_creates_pre_annotated_review_tasks(site: Path, tmp_path: Path) -> None:
    w = ["-w", str(tmp_path / "ws"), "--reviewer", "oracle", "--labels", str(tmp_path)]
    code, _, err = run("autolabel", str(site), *w)
    assert code == 2 and "--classes" in err  # an empty catalog does not know what to look for

    code, out, err = run("autolabel", str(site), "--classes", ",".join(CLASSES), "--json", *w)
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 4 and report["new"] == 3 and report["pushed"] == 3
    assert report["unreadable"] == ["broken.jpg"] and report["teacher"].startswith("grounding-dino:")

    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    teacher = GroundingDinoTeacher.from_settings(ws.settings, CLASSES)
    with ws.catalog.connect() as con:
        ids = [c for (c,) in con.execute("SELECT capture_id FROM review_tasks WHERE strategy = 'autolabel' "
                                         "ORDER BY capture_id").fetchall()]
        items = load_items(con, ids)
    assert len(items) == 3 and report["boxes"] == sum(len(i.detections) for i in items) > 0
    for item in items:
        image = cv2.imread(item.source_uri)
        found = teacher.predict(image)
        # The task's pre-annotations are the teacher's boxes, classes and scores on that very image.
        np.testing.assert_allclose(item.detections.xyxy, found.xyxy, atol=1e-3)
        assert item.detections.class_id.tolist() == found.class_id.tolist()
        np.testing.assert_allclose(item.detections.confidence, found.confidence, atol=1e-6)
        regions = prediction(item, CLASSES)["result"]
        assert [r["value"]["rectanglelabels"][0] for r in regions] == [CLASSES[c] for c in found.class_id]
        assert item.model_version == teacher.name

    code, out, _ = run("autolabel", str(site), "--json", *w)  # again: the catalog knows the classes now
    assert code == 0 and json.loads(out)["new"] == 0 and json.loads(out)["known"] == 3
