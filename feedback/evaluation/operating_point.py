"""Precision, recall, confusion matrix and the worst mistakes at the deployed confidence threshold(s).

mAP integrates over all thresholds; this is what a camera actually does at its operating point, IoU 0.5:
one confidence for every class (0.25 by default), or each class's own (DESIGN decision 9).

Matching, per image: predictions with score >= confidence, in descending score, each take the
unmatched ground-truth box of their own class with the highest IoU >= iou (greedy, one-to-one).
Those pairs are the true positives; every other prediction is a false positive and every other
ground-truth box a false negative.

Confusion matrix, (n+1)×(n+1), ultralytics' orientation: rows are the predicted class, columns
the true class, index n is background. The diagonal holds the true positives. Leftover
predictions then take leftover ground truth of any class the same greedy way, which puts a
wrong-class box at [predicted, true]; still-unmatched predictions go to [predicted, background]
and still-unmatched ground truth to [background, true]. So column c sums to class c's ground
truth and row c to class c's predictions. [background, background] stays 0 (nothing to count).

Worst mistakes, for the galleries:
- false positives, worst first: highest score first (the most confident false alarms);
- false negatives, worst first: by `best_score`, the highest score of any same-class prediction
  overlapping the box at IoU >= iou before the confidence cut (down to mAP's 0.001), lowest
  first; 0 means the model did not see it at all. Ties: larger boxes first (harder to excuse).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import supervision as sv

Box = tuple[float, float, float, float]  # xyxy pixels


@dataclass(frozen=True)
class FalsePositive:
    image_id: str
    box: Box
    class_id: int
    score: float
    best_iou: float  # highest IoU with any ground-truth box of any class in the image
    best_iou_class: int | None  # that box's class; None when nothing overlaps at all


@dataclass(frozen=True)
class FalseNegative:
    image_id: str
    box: Box
    class_id: int
    best_score: float  # see the module docstring; 0.0 when no same-class prediction overlaps


Confidence = float | Mapping[int, float]  # one threshold, or class id -> its own (others: DEFAULT_CONFIDENCE)
DEFAULT_CONFIDENCE = 0.25


def per_detection_threshold(class_ids: np.ndarray, confidence: Confidence) -> np.ndarray | float:
    """The threshold each detection must reach: its class's own, else the default."""
    if not isinstance(confidence, Mapping):
        return confidence
    return np.array([confidence.get(int(c), DEFAULT_CONFIDENCE) for c in class_ids], dtype=np.float64)


@dataclass(frozen=True)
class OperatingPoint:
    confidence: Confidence
    iou: float
    confusion: np.ndarray  # (n+1)×(n+1) int64, [predicted, true], last index background
    false_positives: tuple[FalsePositive, ...]  # worst first
    false_negatives: tuple[FalseNegative, ...]  # worst first

    @property
    def true_positives(self) -> np.ndarray:
        return np.diag(self.confusion)[:-1]

    @property
    def predicted(self) -> np.ndarray:
        """Predictions kept at this confidence, per class."""
        return self.confusion.sum(axis=1)[:-1]

    @property
    def instances(self) -> np.ndarray:
        """Ground-truth boxes per class."""
        return self.confusion.sum(axis=0)[:-1]

    def class_precision(self, cls: int) -> float | None:
        return _ratio(self.true_positives[cls], self.predicted[cls])

    def class_recall(self, cls: int) -> float | None:
        return _ratio(self.true_positives[cls], self.instances[cls])

    @property
    def precision(self) -> float | None:
        """Pooled over classes (micro): the share of all alarms raised that were right."""
        return _ratio(self.true_positives.sum(), self.predicted.sum())

    @property
    def recall(self) -> float | None:
        """Pooled over classes (micro): the share of all objects that raised the right alarm."""
        return _ratio(self.true_positives.sum(), self.instances.sum())


def operating_point(
    truths: Mapping[str, sv.Detections],
    predictions: Mapping[str, sv.Detections],
    n_classes: int,
    *,
    confidence: Confidence = DEFAULT_CONFIDENCE,
    iou: float = 0.5,
) -> OperatingPoint:
    """Match every image's predictions (all of them, mAP's low threshold is fine) to its ground truth."""
    unknown = set(predictions) - set(truths)
    if unknown:
        raise ValueError(f"predictions for images without ground truth: {sorted(unknown)[:5]}")
    confusion = np.zeros((n_classes + 1, n_classes + 1), np.int64)
    false_positives: list[FalsePositive] = []
    false_negatives: list[FalseNegative] = []
    for image_id, truth in truths.items():
        found = predictions.get(image_id, sv.Detections.empty())
        fps, fns = _match_image(image_id, truth, found, confusion, confidence, iou)
        false_positives += fps
        false_negatives += fns
    false_positives.sort(key=lambda fp: (-fp.score, fp.image_id))
    false_negatives.sort(key=lambda fn: (fn.best_score, -_area(fn.box), fn.image_id))
    return OperatingPoint(confidence, iou, confusion, tuple(false_positives), tuple(false_negatives))


def _match_image(
    image_id: str,
    truth: sv.Detections,
    everything: sv.Detections,
    confusion: np.ndarray,
    confidence: Confidence,
    iou: float,
) -> tuple[list[FalsePositive], list[FalseNegative]]:
    background = confusion.shape[0] - 1
    kept = everything[everything.confidence >= per_detection_threshold(everything.class_id, confidence)]
    order = np.argsort(-kept.confidence, kind="stable")
    overlaps = sv.box_iou_batch(kept.xyxy, truth.xyxy)  # [prediction, ground truth]
    gt_class, pred_class = truth.class_id, kept.class_id
    gt_matched = np.zeros(len(truth), bool)
    pred_matched = np.zeros(len(kept), bool)
    for i in order:
        j = best_free(overlaps[i], ~gt_matched & (gt_class == pred_class[i]), iou)
        if j is not None:
            gt_matched[j] = pred_matched[i] = True
            confusion[pred_class[i], gt_class[j]] += 1
    # Only for the confusion matrix: which class did the model call the objects it got wrong?
    gt_confused = gt_matched.copy()
    for i in order[~pred_matched[order]]:
        j = best_free(overlaps[i], ~gt_confused, iou)
        if j is None:
            confusion[pred_class[i], background] += 1
        else:
            gt_confused[j] = True
            confusion[pred_class[i], gt_class[j]] += 1
    for j in np.flatnonzero(~gt_confused):
        confusion[background, gt_class[j]] += 1

    fps = []
    for i in np.flatnonzero(~pred_matched):
        best = int(np.argmax(overlaps[i])) if len(truth) else -1
        best_iou = float(overlaps[i, best]) if best >= 0 else 0.0
        fps.append(FalsePositive(
            image_id, _box(kept.xyxy[i]), int(pred_class[i]), float(kept.confidence[i]),
            best_iou, int(gt_class[best]) if best_iou > 0 else None,
        ))  # fmt: skip
    fns = []
    seen = sv.box_iou_batch(truth.xyxy, everything.xyxy)  # [ground truth, every prediction down to mAP's threshold]
    for j in np.flatnonzero(~gt_matched):
        same = (everything.class_id == gt_class[j]) & (seen[j] >= iou)
        best_score = float(everything.confidence[same].max()) if same.any() else 0.0
        fns.append(FalseNegative(image_id, _box(truth.xyxy[j]), int(gt_class[j]), best_score))
    return fps, fns


def best_free(overlaps: np.ndarray, free: np.ndarray, iou: float) -> int | None:
    """Index of the free box with the highest IoU, if that IoU reaches the threshold."""
    candidates = np.where(free & (overlaps >= iou), overlaps, -1.0)
    if not len(candidates) or candidates.max() < 0:
        return None
    return int(np.argmax(candidates))


def _box(xyxy: np.ndarray) -> Box:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return x1, y1, x2, y2


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _ratio(numerator: float, denominator: float) -> float | None:
    """None rather than 0 when undefined: no predictions has no precision, no objects no recall."""
    return float(numerator / denominator) if denominator else None
