"""Whether two detectors saw the same objects: the check a new model passes before it is swapped in,
against the publisher's reference set (the updater) or against ONNX Runtime on the device (a fresh engine).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import supervision as sv

from edge.detectors.base import Detector, thresholds_of

log = logging.getLogger(__name__)


def detections_agree(
    reference: sv.Detections,
    candidate: sv.Detections,
    *,
    box_tol_px: float = 2.0,
    conf_tol: float = 0.02,
    conf_threshold: float = 0.25,
    class_thresholds: Mapping[int, float] | None = None,
) -> tuple[bool, str]:
    """Whether two detectors saw the same objects in one frame, and if not, why.

    Every box must have a partner of the same class whose corners are all within
    `box_tol_px` and whose confidence is within `conf_tol`. FP16 moves scores by a little,
    so a box scored within `conf_tol` of the threshold may exist on one side only. A class in
    `class_thresholds` is judged against its own threshold instead of `conf_threshold`.
    """
    own = {int(c): float(t) for c, t in (class_thresholds or {}).items()}

    def borderline(class_id: int) -> float:
        return own.get(class_id, conf_threshold) + conf_tol

    unmatched = set(range(len(candidate)))
    for i in np.argsort(-reference.confidence, kind="stable"):
        same_class = [j for j in unmatched if candidate.class_id[j] == reference.class_id[i]]
        dists = [float(np.abs(candidate.xyxy[j] - reference.xyxy[i]).max()) for j in same_class]
        best = int(np.argmin(dists)) if dists else -1
        if best >= 0 and dists[best] <= box_tol_px:
            j = same_class[best]
            if abs(float(candidate.confidence[j]) - float(reference.confidence[i])) > conf_tol:
                return False, f"box {i}: confidence {candidate.confidence[j]:.3f} vs {reference.confidence[i]:.3f}"
            unmatched.discard(j)
        elif reference.confidence[i] >= borderline(int(reference.class_id[i])):
            nearest = f"{min(dists):.1f} px" if dists else "no box of that class"
            return False, f"box {i} (class {reference.class_id[i]}) has no partner within {box_tol_px} px: {nearest}"
    extra = [j for j in unmatched if candidate.confidence[j] >= borderline(int(candidate.class_id[j]))]
    if extra:
        return False, f"{len(extra)} box(es) only in the candidate, best score {candidate.confidence[extra].max():.3f}"
    return True, ""


def verify_against_onnx(
    engine_detector: Detector,
    onnx_detector: Detector,
    frames: Iterable[np.ndarray],
    box_tol_px: float = 2.0,
    *,
    conf_tol: float = 0.02,
) -> bool:
    """True when the engine finds what ONNX Runtime finds on every frame; the device runs
    this before swapping a freshly built engine in, and keeps the old model if it fails.
    Both run the same model, so a box is borderline near its class's threshold (the model's
    own, else the ONNX detector's `conf`)."""
    conf_threshold = float(getattr(onnx_detector, "conf", 0.25))
    class_thresholds = thresholds_of(onnx_detector)
    if engine_detector.names != onnx_detector.names:
        log.warning("engine and ONNX disagree on class names: %s vs %s", engine_detector.names, onnx_detector.names)
        return False
    checked = 0
    for index, frame in enumerate(frames):
        ok, why = detections_agree(
            onnx_detector.detect(frame),
            engine_detector.detect(frame),
            box_tol_px=box_tol_px,
            conf_tol=conf_tol,
            conf_threshold=conf_threshold,
            class_thresholds=class_thresholds,
        )
        if not ok:
            log.warning("engine differs from ONNX on frame %d: %s", index, why)
            return False
        checked += 1
    if checked == 0:
        raise ValueError("verify_against_onnx needs at least one frame")
    return True
