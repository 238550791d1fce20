"""mAP, precision/recall and the confusion matrix on hand-made ground truth and predictions, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from feedback.evaluation.dataset import LabelledImage, YoloDataset, load_dataset
from feedback.evaluation.evaluate import evaluate_predictions
from feedback.evaluation.operating_point import operating_point
from feedback.scenes import CLASSES
from tests.feedback.evaluation.independent_coco import coco_stats

NAMES = ("helmet", "no_helmet", "vest")
HELMET, NO_HELMET, VEST, BACKGROUND = 0, 1, 2, 3


def truth(*boxes: tuple[int, tuple[float, float, float, float]]) -> sv.Detections:
    return sv.Detections(
        xyxy=np.array([b for _, b in boxes], np.float64).reshape(-1, 4),
        class_id=np.array([c for c, _ in boxes], np.int64),
    )


def predicted(*boxes: tuple[int, float, tuple[float, float, float, float]]) -> sv.Detections:
    return sv.Detections(
        xyxy=np.array([b for _, _, b in boxes], np.float64).reshape(-1, 4),
        confidence=np.array([s for _, s, _ in boxes], np.float64),
        class_id=np.array([c for c, _, _ in boxes], np.int64),
    )


def dataset(truths: dict[str, sv.Detections], names: tuple[str, ...] = NAMES) -> YoloDataset:
    images = tuple(LabelledImage(i, Path(f"{i}.jpg"), 640, 480, t) for i, t in truths.items())
    return YoloDataset(root=Path("."), names=names, images=images)


def perfect(truths: dict[str, sv.Detections]) -> dict[str, sv.Detections]:
    return {
        i: sv.Detections(xyxy=t.xyxy, class_id=t.class_id, confidence=np.full(len(t), 0.9)) for i, t in truths.items()
    }


TRUTHS = {
    "a": truth((HELMET, (10, 10, 60, 60)), (VEST, (100, 100, 200, 260))),
    "b": truth((NO_HELMET, (300, 40, 340, 90)), (HELMET, (400, 40, 450, 90))),
    "c": truth(),  # a frame with nobody in it
}


def test_perfect_predictions_score_one_everywhere() -> None:
    result = evaluate_predictions(dataset(TRUTHS), perfect(TRUTHS))
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    for name in NAMES:
        assert result["per_class"][name]["map50"] == pytest.approx(1.0)
        assert result["per_class"][name]["precision"] == 1.0 and result["per_class"][name]["recall"] == 1.0
    assert [result["per_class"][n]["instances"] for n in NAMES] == [2, 1, 1]
    assert result["operating_point"] == {"confidence": 0.25, "iou": 0.5}
    json.dumps(result)  # plain JSON types only, no numpy scalars


def test_one_false_positive_and_one_false_negative_give_exact_precision_and_recall() -> None:
    truths = {"a": truth((HELMET, (10, 10, 60, 60)), (HELMET, (200, 10, 250, 60)))}
    predictions = {"a": predicted(
        (HELMET, 0.9, (12, 10, 62, 60)),  # finds the first helmet
        (HELMET, 0.8, (400, 300, 450, 350)),  # nothing there
        (HELMET, 0.1, (200, 12, 250, 62)),  # the second helmet, but below the deployed threshold
    )}  # fmt: skip
    result = evaluate_predictions(dataset(truths), predictions)
    assert result["precision"] == 0.5 and result["recall"] == 0.5
    helmet = result["per_class"]["helmet"]
    assert (helmet["true_positives"], helmet["false_positives"], helmet["false_negatives"]) == (1, 1, 1)
    point = operating_point(truths, predictions, len(NAMES))
    [fp], [fn] = point.false_positives, point.false_negatives
    assert (fp.score, fp.best_iou, fp.best_iou_class) == (0.8, 0.0, None)
    assert fn.box == (200, 10, 250, 60) and fn.best_score == pytest.approx(0.1)  # seen, only at low confidence


def test_confusion_matrix_puts_each_box_in_its_cell() -> None:
    truths = {
        "a": truth((HELMET, (10, 10, 60, 60)), (NO_HELMET, (100, 10, 150, 60)), (VEST, (300, 300, 400, 450))),
        "b": truth((VEST, (50, 50, 150, 200))),
    }
    predictions = {
        "a": predicted(
            (HELMET, 0.95, (10, 10, 60, 60)),  # right
            (HELMET, 0.9, (101, 10, 151, 60)),  # a bare head called a helmet: the rare class's typical failure
            (NO_HELMET, 0.7, (500, 20, 540, 60)),  # a bare head on the wall
        ),
        "b": predicted((VEST, 0.2, (50, 50, 150, 200))),  # below 0.25: the vest is missed
    }
    point = operating_point(truths, predictions, len(NAMES))
    expected = np.zeros((4, 4), np.int64)
    expected[HELMET, HELMET] = 1
    expected[HELMET, NO_HELMET] = 1
    expected[NO_HELMET, BACKGROUND] = 1
    expected[BACKGROUND, VEST] = 2
    np.testing.assert_array_equal(point.confusion, expected)
    assert point.true_positives.tolist() == [1, 0, 0]
    assert point.instances.tolist() == [1, 1, 2]  # columns sum to ground truth
    # The wrong-class box is a false positive for helmet and a false negative for no_helmet.
    assert [fp.best_iou_class for fp in point.false_positives] == [NO_HELMET, None]
    assert sorted(fn.class_id for fn in point.false_negatives) == [NO_HELMET, VEST, VEST]


def test_greedy_matching_goes_by_score_not_by_overlap() -> None:
    truths = {"a": truth((HELMET, (0, 0, 100, 100)))}
    predictions = {"a": predicted((HELMET, 0.6, (0, 0, 100, 100)), (HELMET, 0.9, (0, 0, 100, 70)))}
    point = operating_point(truths, predictions, len(NAMES))
    assert [fp.score for fp in point.false_positives] == [0.6]  # the perfect box came second


def test_worst_mistakes_come_first() -> None:
    truths = {"a": truth((HELMET, (0, 0, 10, 10)), (HELMET, (100, 0, 200, 100)), (VEST, (300, 0, 340, 40)))}
    predictions = {"a": predicted(
        (VEST, 0.3, (0, 300, 50, 350)), (VEST, 0.8, (0, 400, 50, 450)), (VEST, 0.05, (300, 0, 340, 40)),
    )}  # fmt: skip
    point = operating_point(truths, predictions, len(NAMES))
    assert [fp.score for fp in point.false_positives] == [0.8, 0.3]
    # Never seen, larger first; then the vest that was seen at 0.05.
    assert [(fn.box[0], fn.best_score) for fn in point.false_negatives] == [(100, 0.0), (0, 0.0), (300, 0.05)]


def test_a_class_without_ground_truth_is_null_and_left_out_of_the_means() -> None:
    truths = {"a": truth((HELMET, (10, 10, 60, 60)), (VEST, (100, 100, 200, 260)))}
    predictions = {"a": predicted(
        (HELMET, 0.9, (10, 10, 60, 60)),
        (VEST, 0.8, (100, 100, 200, 200)),  # IoU 0.625: counts at 0.5, not at the stricter thresholds
        (NO_HELMET, 0.7, (300, 300, 340, 340)),
    )}  # fmt: skip
    result = evaluate_predictions(dataset(truths), predictions)
    rare = result["per_class"]["no_helmet"]
    assert rare["map50"] is None and rare["map50_95"] is None and rare["recall"] is None
    assert rare["precision"] == 0.0 and rare["instances"] == 0
    aps = [result["per_class"][n]["map50_95"] for n in ("helmet", "vest")]
    assert result["map50_95"] == pytest.approx(np.mean(aps))
    assert result["map50"] == pytest.approx(1.0)
    assert result["per_class"]["vest"]["map50_95"] == pytest.approx(3 / 10, abs=1e-9)  # 0.5, 0.55, 0.6 of 10 thresholds


def test_no_predictions_at_all() -> None:
    result = evaluate_predictions(dataset(TRUTHS), {})
    assert result["map50"] == 0.0 and result["map50_95"] == 0.0
    assert result["precision"] is None and result["recall"] == 0.0


def noisy(dataset_: YoloDataset, seed: int = 0) -> dict[str, sv.Detections]:
    """Predictions with every kind of error: jitter, misses, wrong classes, false alarms, mixed scores."""
    rng = np.random.default_rng(seed)
    out = {}
    for image in dataset_.images:
        keep = rng.random(len(image.truth)) > 0.15
        xyxy = image.truth.xyxy[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        cls = image.truth.class_id[keep].copy()
        swap = rng.random(len(cls)) < 0.15
        cls[swap] = rng.integers(0, len(dataset_.names), int(swap.sum()))
        n_false = int(rng.integers(0, 4))
        corner = rng.uniform(0, 260, (n_false, 2))
        false = np.hstack([corner, corner + rng.uniform(15, 60, (n_false, 2))])
        out[image.image_id] = sv.Detections(
            xyxy=np.vstack([xyxy, false]),
            class_id=np.concatenate([cls, rng.integers(0, len(dataset_.names), n_false)]),
            confidence=rng.uniform(0.01, 1.0, len(cls) + n_false),
        )
    return out


def independent_coco_gt(root: Path) -> dict:
    """COCO ground truth straight from the label files, sharing no code with the evaluator."""
    images, annotations = [], []
    for label in sorted((root / "labels").glob("*.txt")):
        with Image.open(root / "images" / f"{label.stem}.jpg") as img:
            width, height = img.size
        images.append({"id": label.stem, "width": width, "height": height})
        for line in label.read_text().splitlines():
            c, cx, cy, w, h = (float(v) for v in line.split())
            bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append({"id": len(annotations) + 1, "image_id": label.stem, "category_id": int(c),
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": [{"id": i} for i in range(len(CLASSES))]}


def test_map_overall_and_per_class_equals_pycocotools_run_independently(scenes_dir: Path, tmp_path: Path) -> None:
    data = load_dataset(scenes_dir, CLASSES)
    out = tmp_path / "pred.json"
    result = evaluate_predictions(data, noisy(data), coco_predictions=out)
    results = json.loads(out.read_text())
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"} and isinstance(results[0]["image_id"], str)
    gt = independent_coco_gt(scenes_dir)
    map50_95, map50 = coco_stats(gt, out)[:2]
    assert 0.2 < map50 < 0.95  # the noise really does cost something
    assert result["map50"] == pytest.approx(map50, abs=1e-9) and result["map50_95"] == pytest.approx(map50_95, abs=1e-9)
    for cls, name in enumerate(CLASSES):
        ap, ap50 = coco_stats(gt, out, category=cls)[:2]
        mine = result["per_class"][name]
        if ap == -1:  # COCOeval's "no ground truth"
            assert mine["map50"] is None and mine["map50_95"] is None and mine["instances"] == 0
        else:
            assert mine["map50"] == pytest.approx(ap50, abs=1e-9) and mine["map50_95"] == pytest.approx(ap, abs=1e-9)
