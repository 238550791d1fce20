"""Whether two detectors saw the same objects: the check an engine passes against ONNX Runtime, and a
deployed model against the publisher's reference frames, before either may run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from edge.detectors.agreement import detections_agree, verify_against_onnx
from edge.detectors.onnx_runtime import OnnxDetector


def _dets(xyxy, conf, cls) -> sv.Detections:
    return sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(conf, dtype=np.float32),
        class_id=np.asarray(cls, dtype=np.int64),
    )


def test_detections_agree_within_tolerance_and_forgive_only_borderline_scores():
    ref = _dets([[10, 10, 50, 50], [100, 100, 150, 150], [200, 10, 220, 30]], [0.9, 0.6, 0.26], [0, 1, 0])
    near = _dets([[11.5, 10, 50, 49], [100, 100, 150, 151], [200, 10, 220, 30]], [0.91, 0.6, 0.26], [0, 1, 0])
    assert detections_agree(ref, near)[0]
    assert detections_agree(ref, ref[[0, 1]])[0]  # 0.26 is within 0.02 of the 0.25 threshold
    assert not detections_agree(ref, ref[[0, 2]])[0]  # a confident box is missing
    assert not detections_agree(ref[[0, 2]], ref)[0]  # a confident extra box
    shifted = _dets([[13, 10, 50, 50], [100, 100, 150, 150], [200, 10, 220, 30]], [0.9, 0.6, 0.26], [0, 1, 0])
    assert "no partner within 2.0 px" in detections_agree(ref, shifted)[1]
    relabelled = _dets(ref.xyxy, ref.confidence, [0, 2, 0])
    assert not detections_agree(ref, relabelled)[0]
    rescored = _dets(ref.xyxy, [0.9, 0.5, 0.26], [0, 1, 0])
    assert "confidence" in detections_agree(ref, rescored)[1]


def test_detections_agree_judges_a_class_near_its_own_threshold():
    # Class 1's threshold is 0.5: a box of it at 0.51 may exist on one side only, one at 0.6 may not.
    ref = _dets([[10, 10, 50, 50], [100, 100, 150, 150]], [0.9, 0.51], [0, 1])
    assert not detections_agree(ref, ref[[0]])[0]  # at the global 0.25, 0.51 is far from borderline
    assert detections_agree(ref, ref[[0]], class_thresholds={1: 0.5})[0]
    confident = _dets([[10, 10, 50, 50], [100, 100, 150, 150]], [0.9, 0.6], [0, 1])
    assert not detections_agree(confident, confident[[0]], class_thresholds={1: 0.5})[0]
    assert not detections_agree(confident[[0]], confident, class_thresholds={1: 0.5})[0]  # nor as an extra
    # A class whose threshold is below the global one is judged down there too.
    low = _dets([[10, 10, 50, 50], [100, 100, 150, 150]], [0.9, 0.15], [0, 1])
    assert detections_agree(low, low[[0]])[0]
    assert not detections_agree(low, low[[0]], class_thresholds={1: 0.1})[0]


class _Shifted:
    """A detector seeing everything `dx` pixels to the right: an engine gone wrong."""

    def __init__(self, inner: OnnxDetector, dx: float) -> None:
        self.inner, self.dx = inner, dx
        self.names, self.input_size, self.model_version = inner.names, inner.input_size, inner.model_version

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        dets = self.inner.detect(frame_bgr)
        dets.xyxy = dets.xyxy + np.float32([self.dx, 0, self.dx, 0])
        return dets


def test_verify_against_onnx(ppe_onnx: Path, val_frames: list[np.ndarray]):
    reference = OnnxDetector(ppe_onnx)
    frames = val_frames[:4]
    assert verify_against_onnx(OnnxDetector(ppe_onnx), reference, frames)
    assert verify_against_onnx(_Shifted(reference, 1.5), reference, frames, box_tol_px=2.0)
    assert not verify_against_onnx(_Shifted(reference, 3.0), reference, frames, box_tol_px=2.0)
    with pytest.raises(ValueError, match="at least one frame"):
        verify_against_onnx(reference, reference, [])
