"""Issue 5 on real data: import a slice of ppe/base and all of ppe/val, train one epoch, gate on val."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.training.gate_run import run_gate
from feedback.training.train import train
from store.settings import Settings, Workspace

pytestmark = pytest.mark.integration

PPE_CLASSES = ["helmet", "no_helmet", "no_wear", "wear"]


def _slice(ppe_dir: Path, split: str, n: int, into: Path) -> Path:
    """A YOLO folder of links to the first `n` images of a split (the data set is never copied)."""
    (into / "images").mkdir(parents=True)
    (into / "labels").mkdir()
    for image in sorted((ppe_dir / split / "images").glob("*.jpg"))[:n]:
        (into / "images" / image.name).symlink_to(image)
        label = ppe_dir / split / "labels" / f"{image.stem}.txt"
        if label.exists():
            (into / "labels" / label.name).symlink_to(label)
    return into


def test_one_epoch_on_a_slice_of_base_judged_on_val(ppe_dir: Path, tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    base = import_yolo(ws, _slice(ppe_dir, "base", 48, tmp_path / "base"), "train", names=PPE_CLASSES,
                       progress=False)
    val = import_yolo(ws, ppe_dir / "val", "holdout", names=PPE_CLASSES, progress=False)
    assert (base.images, val.images) == (48, 250)

    result = train(ws, parent=None, overrides={"epochs": 1, "imgsz": 320, "batch": 16})
    report = run_gate(ws, result.model_id, progress=False, report_dir=tmp_path / "report")
    metrics = report.challenger_metrics

    # The holdout is exactly ppe/val: its instance counts per class are the data set's own.
    expected = np.zeros(4, int)
    for label in (ppe_dir / "val" / "labels").glob("*.txt"):
        for line in label.read_text().split("\n"):
            if line.strip():
                expected[int(line.split()[0])] += 1
    assert [metrics["per_class"][c]["instances"] for c in PPE_CLASSES] == expected.tolist()
    assert 0.0 <= metrics["map50_95"] <= metrics["map50"] <= 1.0
    assert metrics["operating_point"] == {"confidence": 0.25, "iou": 0.5}
    assert report.decision.promoted  # the first model has no champion to beat
    assert (tmp_path / "report" / "challenger" / "confusion_matrix.png").is_file()
