"""The detector factory: opens a model file with the backend that runs it (ONNX Runtime or TensorRT).

It sits beside the port (`base.py`) rather than in it, so that no backend imports back the module that loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from edge.detectors.base import Detector
from edge.detectors.tensorrt_engine import TensorRTDetector

Backend = Literal["auto", "onnxruntime", "tensorrt"]
_BY_SUFFIX: dict[str, Backend] = {".onnx": "onnxruntime", ".engine": "tensorrt"}


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
    if backend == "onnxruntime":
        from edge.detectors.onnx_runtime import OnnxDetector  # why: a device running TensorRT never loads onnxruntime

        return OnnxDetector(path, conf=conf, iou=iou, providers=providers, class_thresholds=class_thresholds)
    if backend == "tensorrt":
        if providers is not None:
            raise ValueError("execution providers apply to the onnxruntime backend only")
        return TensorRTDetector(path, conf=conf, iou=iou, class_thresholds=class_thresholds)
    raise ValueError(f"unknown detector backend {backend!r}: expected 'auto', 'onnxruntime' or 'tensorrt'")
