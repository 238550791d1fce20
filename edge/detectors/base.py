"""The detector port of the edge agent, and the loader that picks a backend for a model file.

Every backend returns `sv.Detections` in frame pixels with `data["class_name"]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import supervision as sv

Backend = Literal["auto", "onnxruntime", "tensorrt"]
_BY_SUFFIX: dict[str, Backend] = {".onnx": "onnxruntime", ".engine": "tensorrt"}


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


def load_detector(
    path: str | Path,
    *,
    backend: Backend = "auto",
    conf: float = 0.25,
    iou: float = 0.7,
    providers: Sequence[str | tuple[str, dict]] | None = None,
    class_thresholds: bool = True,
) -> Detector:
    """Open a model file with the right backend: ONNX Runtime for `.onnx`, TensorRT for `.engine`.

    `conf` and `iou` default to ultralytics' predict defaults, so a model behaves here
    as it did when it was evaluated. `providers` are ONNX Runtime execution providers.
    A model stamped with per-class thresholds keeps those classes at their own, the rest at
    `conf`; `class_thresholds=False` ignores them: every class at `conf`.
    """
    path = Path(path)
    if backend == "auto":
        if path.suffix.lower() not in _BY_SUFFIX:
            raise ValueError(f"cannot tell the backend of {path.name}: expected .onnx or .engine")
        backend = _BY_SUFFIX[path.suffix.lower()]
    # Imported here so that a device without TensorRT never loads its module's
    # dependencies, and one running TensorRT never needs ONNX Runtime's session.
    if backend == "onnxruntime":
        from edge.detectors.onnx_runtime import OnnxDetector

        return OnnxDetector(path, conf=conf, iou=iou, providers=providers, class_thresholds=class_thresholds)
    if backend == "tensorrt":
        if providers is not None:
            raise ValueError("execution providers apply to the onnxruntime backend only")
        from edge.detectors.tensorrt_engine import TensorRTDetector

        return TensorRTDetector(path, conf=conf, iou=iou, class_thresholds=class_thresholds)
    raise ValueError(f"unknown detector backend {backend!r}: expected 'auto', 'onnxruntime' or 'tensorrt'")
