"""The report an operator reads: the table's layout, the confusion matrix files, the galleries."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from feedback.evaluation.dataset import load_dataset
from feedback.evaluation.evaluate import evaluate_predictions, format_table
from feedback.scenes import CLASSES

HEADER = "class  mAP@0.5  mAP@0.5:0.95  Precision  Recall"


def test_table_layout() -> None:
    result = {
        "map50": 0.5, "map50_95": 0.25, "precision": 0.75, "recall": None,
        "per_class": {
            "helmet": {"map50": 0.5, "map50_95": 0.25, "precision": 0.75, "recall": 0.5, "instances": 3},
            "no_helmet": {"map50": None, "map50_95": None, "precision": None, "recall": None, "instances": 0},
        },
    }  # fmt: skip
    lines = format_table(result).splitlines()
    assert HEADER in lines[0]
    assert lines[0].split() == ["class", "mAP@0.5", "mAP@0.5:0.95", "Precision", "Recall", "Instances"]
    assert lines[1].split() == ["all", "0.500", "0.250", "0.750", "-", "3"]
    assert lines[3].split() == ["no_helmet", "-", "-", "-", "-", "0"]
    assert len({len(line) for line in lines}) == 1  # columns line up


def test_report_files(scenes_dir: Path, tmp_path: Path) -> None:
    data = load_dataset(scenes_dir, CLASSES)
    rng = np.random.default_rng(1)
    predictions = {}
    for image in data.images:  # every other box found, plus one confident false alarm per frame
        found = image.truth[::2]
        predictions[image.image_id] = sv.Detections(
            xyxy=np.vstack([found.xyxy, [[5, 5, 45, 45]]]),
            class_id=np.append(found.class_id, 0),
            confidence=rng.uniform(0.3, 1.0, len(found) + 1),
        )
    result = evaluate_predictions(data, predictions, report_dir=tmp_path / "report")
    report = tmp_path / "report"
    assert HEADER in (report / "table.txt").read_text().splitlines()[0]
    matrix = json.loads((report / "confusion_matrix.json").read_text())
    assert matrix["labels"] == [*CLASSES, "background"] and matrix["rows"] == "predicted"
    assert matrix == result["confusion_matrix"]
    column_sums = np.asarray(matrix["matrix"]).sum(axis=0)[:-1].tolist()
    assert column_sums == [c["instances"] for c in result["per_class"].values()]
    for name in ("confusion_matrix.png", "false_positives.png", "false_negatives.png"):
        image = cv2.imread(str(report / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, name
    mistakes = json.loads((report / "mistakes.json").read_text())
    assert len(mistakes["false_positives"]) == 10 and len(mistakes["false_negatives"]) == 10
    scores = [fp["score"] for fp in mistakes["false_positives"]]
    assert scores == sorted(scores, reverse=True)
    assert all(fn["best_score"] == 0.0 for fn in mistakes["false_negatives"])  # none of the skipped boxes was predicted


def test_galleries_say_so_when_there_are_no_mistakes(scenes_dir: Path, tmp_path: Path) -> None:
    data = load_dataset(scenes_dir, CLASSES)
    perfect = {
        i.image_id: sv.Detections(xyxy=i.truth.xyxy, class_id=i.truth.class_id, confidence=np.ones(len(i.truth)))
        for i in data.images
    }
    evaluate_predictions(data, perfect, report_dir=tmp_path)
    assert cv2.imread(str(tmp_path / "false_positives.png")) is not None
    assert json.loads((tmp_path / "mistakes.json").read_text())["false_negatives"] == []
