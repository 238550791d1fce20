"""Per-class operating points: each class's confidence threshold, chosen for a target precision (DESIGN 9).

Chosen on verified images that are not the ones its recall is then reported on: for an alert class the cut that
sees the most of it at the target precision, for the others the best F1 at that precision or above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import supervision as sv

from feedback.evaluation.operating_point import best_free

DEFAULT_PRECISION = 0.5  # an alert that is right at least every other time
MIN_THRESHOLD = 0.01  # below this a device would decode thousands of boxes a frame
MAX_THRESHOLD = 0.95


@dataclass(frozen=True)
class ClassThreshold:
    """One class's operating point on the calibration images."""

    class_id: int
    threshold: float
    precision: float  # on the calibration images, at `threshold`
    recall: float
    instances: int  # ground-truth boxes of the class among the calibration images
    reached: bool  # False: no threshold reaches the target; `threshold` then maximises F1

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def ranked_hits(truths: Mapping[str, sv.Detections], predictions: Mapping[str, sv.Detections], cls: int,
                iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """Class `cls`'s predictions over all images, highest score first, each flagged true positive or not, and
    the class's ground-truth count. Greedy one-to-one matching by descending score, as the operating point's:
    a prediction's match depends only on those scored above it, so the flags hold at every threshold."""
    scores, hits, instances = [], [], 0
    for image_id, truth in truths.items():
        gt = truth.xyxy[truth.class_id == cls]
        instances += len(gt)
        found = predictions.get(image_id, sv.Detections.empty())
        found = found[found.class_id == cls]
        if not len(found):
            continue
        order = np.argsort(-found.confidence, kind="stable")
        overlaps = sv.box_iou_batch(found.xyxy[order], gt) if len(gt) else np.zeros((len(found), 0))
        free = np.ones(len(gt), bool)
        for row, i in enumerate(order):
            j = best_free(overlaps[row], free, iou)  # the operating point's own greedy matching
            if j is not None:
                free[j] = False
            scores.append(float(found.confidence[i]))
            hits.append(j is not None)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return np.asarray(scores, dtype=np.float64)[order], np.asarray(hits, dtype=bool)[order], instances


def choose_threshold(scores: np.ndarray, hits: np.ndarray, instances: int, cls: int, target_precision: float,
                     objective: str = "recall") -> ClassThreshold | None:
    """Among the cuts whose precision reaches the target, the one with the most recall (an alert class: seeing it
    is the point), the highest such cut when several share it; or, objective "f1", the best F1 (any other class:
    a lower cut that buys a last straggler with a flood of false boxes is no better). None without ground truth or
    predictions to choose from. Cuts fall only where the score changes: tied boxes go together."""
    if objective not in ("recall", "f1"):
        raise ValueError(f"objective {objective!r} is not recall or f1")
    if not instances or not len(scores):
        return None
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / instances
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    last_of_tie = np.append(scores[1:] < scores[:-1], True)  # a cut keeps every box scoring at least its own
    cuts = np.flatnonzero(last_of_tie & (scores >= MIN_THRESHOLD))
    if not len(cuts):
        return None
    good = cuts[precision[cuts] >= target_precision]
    if len(good):
        goal = recall if objective == "recall" else f1
        k, reached = int(good[np.flatnonzero(goal[good] == goal[good].max())[0]]), True
    else:
        k, reached = int(cuts[int(np.argmax(f1[cuts]))]), False
    threshold = float(np.clip(scores[k], MIN_THRESHOLD, MAX_THRESHOLD))
    return ClassThreshold(cls, round(threshold, 5), float(precision[k]), float(recall[k]), int(instances), reached)


def choose_thresholds(truths: Mapping[str, sv.Detections], predictions: Mapping[str, sv.Detections],
                      names: Sequence[str], target_precision: float | Mapping[str, float] = DEFAULT_PRECISION,
                      iou: float = 0.5, alert_classes: Sequence[str] | None = None) -> dict[str, ClassThreshold]:
    """Class name -> its operating point, for every class the calibration images can decide; `target_precision`
    is one for all, or per class name (others: DEFAULT_PRECISION). `alert_classes` (the rare and watched ones)
    get the most recall the target allows, the others the best F1 at that precision or above; None: every
    class is an alert class."""
    chosen = {}
    for cls, name in enumerate(names):
        target = (target_precision.get(name, DEFAULT_PRECISION) if isinstance(target_precision, Mapping)
                  else target_precision)
        if not 0.0 < target <= 1.0:
            raise ValueError(f"operating precision for {name!r} must lie in (0, 1]; got {target}")
        objective = "recall" if alert_classes is None or name in alert_classes else "f1"
        point = choose_threshold(*ranked_hits(truths, predictions, cls, iou), cls, target, objective)
        if point is not None:
            chosen[name] = point
    return chosen


def by_class_id(thresholds: Mapping[str, float] | None, names: Sequence[str]) -> dict[int, float]:
    """Name-keyed thresholds (as stored and shipped) to the class ids the matcher and the detectors use."""
    return {names.index(n): float(t) for n, t in (thresholds or {}).items() if n in names}
