"""COCO AP worked out by hand for a few boxes, against what feedback.evaluation reports.

Covers an image without a label file (its detections are false positives) and COCO's maxDets=100.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from feedback.evaluation.dataset import load_dataset
from feedback.evaluation.evaluate import evaluate_predictions
from tests.feedback.evaluation.independent_coco import coco_stats

NAMES = ("helmet", "no_helmet", "vest")
HELMET, VEST = 0, 2
W, H = 640, 480
Box = tuple[float, float, float, float]


def write_folder(root: Path, truths: dict[str, list[tuple[int, Box]] | None]) -> Path:
    """A YOLO folder of blank W×H frames; None writes no label file at all for that image."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, boxes in truths.items():
        Image.new("RGB", (W, H), (90, 90, 90)).save(root / "images" / f"{stem}.jpg")
        if boxes is not None:
            lines = [f"{c} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} {(y2 - y1) / H}\n"
                     for c, (x1, y1, x2, y2) in boxes]  # fmt: skip
            (root / "labels" / f"{stem}.txt").write_text("".join(lines))
    return root


def detections(*rows: tuple[int, float, Box]) -> sv.Detections:
    return sv.Detections(
        xyxy=np.array([b for _, _, b in rows], np.float64).reshape(-1, 4),
        confidence=np.array([s for _, s, _ in rows], np.float64),
        class_id=np.array([c for c, _, _ in rows], np.int64),
    )


H1, H2, H3 = (10, 10, 60, 60), (200, 10, 250, 60), (30, 30, 80, 80)
V1 = (100, 100, 200, 260)

# Helmet: 3 boxes in truth. Its detections, over all images, by score:
#   rank  score  image   box               verdict                          TP  FP  recall  precision
#   1     0.95   a       H1 exactly        true positive                    1   0   1/3     1/1
#   2     0.90   empty   anywhere          false positive (no label file)   1   1   1/3     1/2
#   3     0.80   b       H3 exactly        true positive                    2   1   2/3     2/3
#   4     0.70   a       H1 again          false positive (H1 taken)        2   2   2/3     2/4
#   5     0.60   a       H2 exactly        true positive                    3   2   3/3     3/5
# Interpolated precision (the best precision at this rank or any later one): 1, 2/3, 2/3, 3/5, 3/5.
# COCO samples it at the 101 recalls r = 0.00, 0.01, ..., 1.00, taking the first rank whose recall >= r:
#   r = 0.00 .. 0.33 (34 points, rank 1)  -> 1
#   r = 0.34 .. 0.66 (33 points, rank 3)  -> 2/3
#   r = 0.67 .. 1.00 (34 points, rank 5)  -> 3/5
# Every box is exact or far away, so the verdicts are the same at all ten IoU thresholds 0.50 .. 0.95.
HELMET_AP = (34 * 1 + 33 * 2 / 3 + 34 * 3 / 5) / 101  # = 76.4 / 101 = 0.75644

# Vest: 1 box in truth (V1, 100×160 px). Its detections by score:
#   1  0.85  empty  anywhere          false positive (no label file)   recall 0  precision 0
#   2  0.40  a      (100,100,200,200)  IoU 100·100 / (100·160) = 0.625
# At IoU 0.50, 0.55, 0.60 rank 2 is a true positive: recall 1, precision 1/2, and all 101 points read 1/2.
# At 0.65 .. 0.95 (7 thresholds) it is a false positive too: nothing is found, AP 0.
VEST_AP50 = 101 * (1 / 2) / 101  # = 0.5
VEST_AP50_95 = (3 * VEST_AP50 + 7 * 0) / 10  # = 0.15
# no_helmet has no truth anywhere: undefined, and left out of the means.


def worked_example(tmp_path: Path) -> tuple[Path, dict[str, sv.Detections]]:
    """The folder and predictions of the tables above."""
    root = write_folder(tmp_path / "data", {"a": [(HELMET, H1), (HELMET, H2), (VEST, V1)], "b": [(HELMET, H3)],
                                            "empty": None})  # fmt: skip
    predictions = {
        "a": detections((HELMET, 0.95, H1), (HELMET, 0.70, H1), (HELMET, 0.60, H2), (VEST, 0.40, (100, 100, 200, 200))),
        "b": detections((HELMET, 0.80, H3)),
        "empty": detections((HELMET, 0.90, (300, 300, 350, 350)), (VEST, 0.85, (300, 200, 400, 360))),
    }
    return root, predictions


def test_ap_by_hand_with_an_image_that_has_no_label_file(tmp_path: Path) -> None:
    root, predictions = worked_example(tmp_path)
    assert not (root / "labels" / "empty.txt").exists()
    out = tmp_path / "pred.json"
    result = evaluate_predictions(load_dataset(root, NAMES), predictions, coco_predictions=out)

    assert result["images"] == 3
    helmet, vest = result["per_class"]["helmet"], result["per_class"]["vest"]
    assert helmet["map50"] == pytest.approx(HELMET_AP, abs=1e-12)
    assert helmet["map50_95"] == pytest.approx(HELMET_AP, abs=1e-12)
    assert vest["map50"] == pytest.approx(VEST_AP50, abs=1e-12)
    assert vest["map50_95"] == pytest.approx(VEST_AP50_95, abs=1e-12)
    assert result["per_class"]["no_helmet"]["map50"] is None
    assert result["map50"] == pytest.approx((HELMET_AP + VEST_AP50) / 2, abs=1e-12)
    assert result["map50_95"] == pytest.approx((HELMET_AP + VEST_AP50_95) / 2, abs=1e-12)

    # pycocotools agrees, given ground truth written here (three images, one with no boxes).
    gt = {
        "images": [{"id": i, "width": W, "height": H} for i in ("a", "b", "empty")],
        "annotations": [
            {"id": n, "image_id": i, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            for n, (i, c, (x1, y1, x2, y2)) in enumerate(
                [("a", HELMET, H1), ("a", HELMET, H2), ("a", VEST, V1), ("b", HELMET, H3)], 1)
        ],  # fmt: skip
        "categories": [{"id": i} for i in range(len(NAMES))],
    }
    assert coco_stats(gt, out)[:2] == pytest.approx([result["map50_95"], result["map50"]], abs=1e-12)
    assert len(json.loads(out.read_text())) == 7


def test_precision_recall_curves_by_hand(tmp_path: Path) -> None:
    """The report's curves are the interpolated precisions tabled above, sampled at COCO's 101 recalls."""
    root, predictions = worked_example(tmp_path)
    result = evaluate_predictions(load_dataset(root, NAMES), predictions, report_dir=tmp_path / "report")
    curves = json.loads((tmp_path / "report" / "pr_curves.json").read_text())
    assert curves["recall"] == [i / 100 for i in range(101)] and curves["iou"] == 0.5
    helmet = curves["precision"]["helmet"]
    assert helmet == pytest.approx([1.0] * 34 + [2 / 3] * 33 + [3 / 5] * 34, abs=1e-5)
    assert curves["precision"]["vest"] == pytest.approx([0.5] * 101, abs=1e-5)
    assert curves["precision"]["no_helmet"] is None  # no truth: no curve
    assert np.mean(helmet) == pytest.approx(result["per_class"]["helmet"]["map50"], abs=1e-5)


def crowd(n_false: int, false_class: int) -> dict[str, sv.Detections]:
    """One helmet found at score 0.5, below `n_false` confident false alarms far from it."""
    false = [(false_class, 0.99 - 0.004 * i, (400, 300, 450, 350)) for i in range(n_false)]
    return {"crowd": detections(*false, (HELMET, 0.5, H1))}


@pytest.mark.parametrize(
    ("n_false", "false_class", "helmet_ap"),
    [
        # 100 helmet false alarms above it: the true one is 101st, past maxDets, never seen. AP 0.
        (100, HELMET, 0.0),
        # 99 above it: it is 100th and counts. Recall 1 at precision 1/100, so all 101 points read 0.01.
        (99, HELMET, 101 * (1 / 100) / 101),
        # COCO applies maxDets per image *and class*: 100 vest alarms do not push a helmet out. AP 1.
        (100, VEST, 1.0),
    ],
)
def test_only_the_top_100_detections_of_an_image_count(
    tmp_path: Path, n_false: int, false_class: int, helmet_ap: float
) -> None:
    root = write_folder(tmp_path / "data", {"crowd": [(HELMET, H1)]})
    predictions = crowd(n_false, false_class)
    assert len(predictions["crowd"]) > 100 or n_false == 99
    result = evaluate_predictions(load_dataset(root, NAMES), predictions)
    assert result["per_class"]["helmet"]["map50"] == pytest.approx(helmet_ap, abs=1e-12)
    assert result["per_class"]["helmet"]["map50_95"] == pytest.approx(helmet_ap, abs=1e-12)
