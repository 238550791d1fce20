"""The detector port of the edge agent: what every backend offers, and the helpers that read it.

Every backend returns `sv.Detections` in frame pixels with `data["class_name"]`; `load.py` picks one for a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import supervision as sv


@runtime_checkable
class Detector(Protocol):
    """Runs one model on BGR frames.

    `names` maps class ids to names, `input_size` is the model's (h, w), and
    `model_version` tags every capture the model produced, whatever backend ran it. Our
    backends also expose `thresholds` (class id -> the class's own confidence threshold, from
    the model) and `conf` (every other class's); read them with `thresholds_of`, which
    tolerates a detector without them.
    """

    names: dict[int, str]
    input_size: tuple[int, int]
    model_version: str

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        """Detections for one frame: xyxy in frame pixels, confidence, class_id, class_name."""
        ...


@runtime_checkable
class BatchDetector(Detector, Protocol):
    """A detector that can also take several frames in one call (not all models can)."""

    def detect_batch(self, frames_bgr: Sequence[np.ndarray]) -> list[sv.Detections]: ...


def detect_all(detector: Detector, frames_bgr: Sequence[np.ndarray]) -> list[sv.Detections]:
    """Detections for each frame, batched when the detector supports it."""
    if isinstance(detector, BatchDetector):
        return detector.detect_batch(frames_bgr)
    return [detector.detect(frame) for frame in frames_bgr]


def thresholds_of(detector: Detector) -> dict[int, float]:
    """The per-class thresholds `detector` applies (class id -> confidence); empty for a model
    without them, run with `class_thresholds=False`, or a detector that has no such notion."""
    return dict(getattr(detector, "thresholds", None) or {})
