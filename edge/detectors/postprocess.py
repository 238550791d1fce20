"""Decodes an ultralytics detection head into `sv.Detections` in frame pixels.

Confidence filter, class-aware NMS and box mapping follow ultralytics' predict, step by step; a model
with per-class thresholds (DESIGN decision 9) has each class filtered at its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import supervision as sv

from edge.detectors.preprocess import Letterbox

MAX_DET = 300  # ultralytics' predict default
MAX_NMS = 30_000  # ultralytics keeps at most this many candidates before NMS
# Ultralytics makes NMS class-aware by shifting each class's boxes by class_id * 7680 px,
# so boxes of different classes never overlap. We do the same so that IoU is computed on
# the same float32 numbers and borderline suppressions agree.
MAX_WH = 7680.0
# `Detections.metadata` key: per-class maximum score over the whole frame before the
# confidence threshold, float32 (nc,), indexed by class id. It shows a class the model
# almost sees, which no box above the threshold can.
CLASS_EVIDENCE = "class_evidence"


def empty_detections(class_evidence: np.ndarray | None = None) -> sv.Detections:
    """No boxes, with the same fields as a non-empty result (so callers need no special case),
    and the frame's class evidence when it is known."""
    return sv.Detections(
        xyxy=np.empty((0, 4), dtype=np.float32),
        confidence=np.empty(0, dtype=np.float32),
        class_id=np.empty(0, dtype=np.int64),
        data={"class_name": np.empty(0, dtype=str)},
        metadata={} if class_evidence is None else {CLASS_EVIDENCE: class_evidence},
    )


def class_evidence(detections: sv.Detections) -> np.ndarray | None:
    """The frame's per-class maximum score before the threshold (float32, indexed by class id),
    or None when the detections did not come from `decode` (another source, an older model path)."""
    evidence = detections.metadata.get(CLASS_EVIDENCE)
    return None if evidence is None else np.asarray(evidence, dtype=np.float32)


def class_threshold_mask(
    confidence: np.ndarray, class_id: np.ndarray, thresholds: Mapping[int, float], default: float
) -> np.ndarray:
    """Which scores clear their class's threshold: `>= thresholds[c]` for a class with its own,
    `> default` for the others (ultralytics' strict test, so a model without thresholds keeps
    exactly the boxes it always did). Compared in the scores' own dtype, as the decoder compares."""
    conf = np.asarray(confidence)
    limit_of = {int(c): float(t) for c, t in thresholds.items()}
    if not limit_of:
        return conf > conf.dtype.type(default)
    cls = np.asarray(class_id, dtype=np.int64)
    size = max(limit_of) + 2  # the last slot stands for every class without a threshold of its own
    limit = np.full(size, default, dtype=conf.dtype)
    own = np.zeros(size, dtype=bool)
    for c, t in limit_of.items():
        limit[c], own[c] = t, True
    slot = np.where((cls >= 0) & (cls < size - 1), cls, size - 1)
    return np.where(own[slot], conf >= limit[slot], conf > limit[slot])


def apply_class_thresholds(
    detections: sv.Detections, thresholds: Mapping[int, float], default: float
) -> sv.Detections:
    """The detections that clear their class's threshold (see `class_threshold_mask`); the frame's
    metadata, its class evidence included, is kept as it was."""
    if not thresholds or detections.confidence is None or detections.class_id is None:
        return detections
    return detections[class_threshold_mask(detections.confidence, detections.class_id, thresholds, default)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, torchvision's algorithm: indices kept, highest score first.

    A box is dropped when its IoU with a kept, higher-scored box is strictly above the
    threshold. Each step compares one kept box with all the rest at once; the loop runs
    once per kept box, which on a camera frame is tens, not thousands.
    """
    boxes = boxes.astype(np.float32, copy=False)
    order = np.argsort(-scores, kind="stable")  # torchvision sorts stably, descending
    x1, y1, x2, y2 = (boxes[order, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1 :]) + i + 1
        if rest.size == 0:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        # Compare in float64, as torchvision compares its float IoU with a double threshold.
        alive[rest[iou.astype(np.float64) > iou_threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def _detections(
    xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, box: Letterbox, names: dict[int, str], evidence: np.ndarray
) -> sv.Detections:
    if len(conf) == 0:
        return empty_detections(evidence)
    class_id = cls.astype(np.int64)
    class_name = np.array([names.get(int(c), str(c)) for c in class_id], dtype=str)
    return sv.Detections(
        xyxy=box.to_frame(xyxy),
        confidence=conf.astype(np.float32, copy=False),
        class_id=class_id,
        data={"class_name": class_name},
        metadata={CLASS_EVIDENCE: evidence},
    )


def decode(
    output: np.ndarray,
    box: Letterbox,
    names: dict[int, str],
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = MAX_DET,
    agnostic: bool = False,
    thresholds: Mapping[int, float] | None = None,
) -> sv.Detections:
    """One image's raw head output → detections in frame pixels.

    `output` is (1, 4 + nc [+ extra], anchors): cx, cy, w, h in input pixels, then class
    scores already passed through a sigmoid. Channels past 4 + len(names) (mask
    coefficients of a segmentation head) are ignored. Each box keeps only its best class,
    as ultralytics does with multi_label=False. The frame's per-class maximum score, taken
    before the threshold, rides along as `metadata["class_evidence"]`. With `thresholds`
    (class id -> confidence) a box of such a class is kept at its class's threshold, even
    one below `conf`; other classes keep `conf`.
    """
    pred = np.asarray(output[0] if output.ndim == 3 else output, dtype=np.float32)
    nc = len(names) or pred.shape[0] - 4
    scores = pred[4 : 4 + nc]
    # (nc,): one pass over the scores the threshold is about to discard; sigmoid scores are >= 0,
    # so the initial 0 changes nothing but a head with no anchors at all.
    evidence = scores.max(axis=1, initial=0.0)
    best = scores.max(axis=0)
    if thresholds:
        # First the lowest score any class keeps (a class threshold may lie below `conf`), then each
        # class at its own, before NMS: a box under its class's threshold could only suppress weaker
        # boxes of that class, all under it too, so NMS gives the same boxes without spending time
        # (or max_det) on boxes that would be thrown away.
        cand = np.flatnonzero(best >= min(conf, *thresholds.values()))
        cand = cand[class_threshold_mask(best[cand], scores[:, cand].argmax(axis=0), thresholds, conf)]
    else:
        cand = np.flatnonzero(best > conf)  # strictly above, as ultralytics
    if cand.size == 0:
        return empty_detections(evidence)
    score = best[cand]
    cls = scores[:, cand].argmax(axis=0)
    if cand.size > MAX_NMS:
        top = np.argsort(-score)[:MAX_NMS]
        cand, score, cls = cand[top], score[top], cls[top]
    cxcy, half_wh = pred[0:2, cand].T, pred[2:4, cand].T / np.float32(2)
    xyxy = np.concatenate([cxcy - half_wh, cxcy + half_wh], axis=1)
    offset = 0.0 if agnostic else cls.astype(np.float32)[:, None] * np.float32(MAX_WH)
    keep = nms(xyxy + offset, score, iou)[:max_det]
    return _detections(xyxy[keep], score[keep], cls[keep], box, names, evidence)


def decode_end2end(
    output: np.ndarray,
    box: Letterbox,
    names: dict[int, str],
    *,
    conf: float = 0.25,
    max_det: int = MAX_DET,
    thresholds: Mapping[int, float] | None = None,
) -> sv.Detections:
    """Heads exported with NMS inside (YOLO26, YOLOv10, `nms=True`): (1, N, 6) rows of
    x1, y1, x2, y2, score, class in input pixels; only the confidence filter remains.

    The class evidence is the per-class maximum over the rows before the threshold (the model
    kept only its top rows, so this is a lower bound of the raw head's), 0 for a class without
    a row.
    """
    rows = np.asarray(output[0] if output.ndim == 3 else output, dtype=np.float32)
    cls = rows[:, 5].astype(np.int64)
    nc = len(names) or (int(cls.max()) + 1 if len(cls) else 0)
    evidence = np.zeros(nc, dtype=np.float32)
    valid = (cls >= 0) & (cls < nc)
    np.maximum.at(evidence, cls[valid], rows[valid, 4])
    rows = rows[class_threshold_mask(rows[:, 4], cls, thresholds or {}, conf)][:max_det]
    return _detections(rows[:, :4], rows[:, 4], rows[:, 5], box, names, evidence)


def postprocess(
    output: np.ndarray, box: Letterbox, names: dict[int, str], *, end2end: bool = False, **options: Any
) -> sv.Detections:
    """Either head → detections; a (1, N, 6) output is end-to-end whatever the metadata says,
    the same test ultralytics applies. `options` are `decode`'s (conf, iou, max_det, thresholds):
    stated there once; an end-to-end head ran its NMS inside, so it takes no `iou`."""
    if end2end or output.shape[-1] == 6:
        options.pop("iou", None)
        return decode_end2end(output, box, names, **options)
    return decode(output, box, names, **options)

