"""Detector backends of the edge agent: ONNX Runtime everywhere, TensorRT on NVIDIA devices.

`load_detector(path)` picks the backend from the file; every backend returns `sv.Detections`.
"""

from edge.detectors.base import BatchDetector, Detector, detect_all, thresholds_of
from edge.detectors.load import load_detector

__all__ = ["BatchDetector", "Detector", "detect_all", "load_detector", "thresholds_of"]
