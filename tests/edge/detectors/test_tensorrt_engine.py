"""The TensorRT backend: what runs without a GPU here, and the real build-and-verify on a GPU.

Tests marked `gpu` need TensorRT and an NVIDIA GPU and skip, saying so, where either is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from edge.detectors import load_detector, onnx_runtime, tensorrt_engine
from edge.detectors.metadata import file_sha256, parse_metadata
from edge.detectors.onnx_runtime import OnnxDetector
from edge.detectors.tensorrt_engine import (
    SIDECAR_SUFFIX,
    TensorRTDetector,
    TensorRTUnavailable,
    build_engine,
    detections_agree,
    engine_cache_key,
    engine_cache_path,
    engine_sidecar,
    read_engine_file,
    verify_against_onnx,
)
from tests.edge.planted_model import planted_onnx, with_thresholds

SHA = "ab" * 32


def _gpu_skip_reason() -> str | None:
    try:
        tensorrt_engine.import_tensorrt()
    except TensorRTUnavailable as exc:
        return f"needs TensorRT and an NVIDIA GPU: TensorRT is not importable ({exc.__cause__ or exc})"
    try:
        tensorrt_engine.gpu_name()
    except (TensorRTUnavailable, RuntimeError) as exc:
        return f"needs an NVIDIA GPU: CUDA reports none ({exc})"
    return None


# -- the engine cache ------------------------------------------------------------------------------


def test_cache_key_is_one_per_onnx_tensorrt_and_gpu():
    key = engine_cache_key(SHA, "10.3.0", "Orin (nvgpu)")
    assert key == engine_cache_key(SHA, "10.3.0", "Orin (nvgpu)")
    others = {
        engine_cache_key("cd" * 32, "10.3.0", "Orin (nvgpu)"),
        engine_cache_key(SHA, "10.7.0", "Orin (nvgpu)"),
        engine_cache_key(SHA, "10.3.0", "NVIDIA GeForce RTX 4090"),
        engine_cache_key(SHA, "10.3.0", "Orin nvgpu"),  # slugs alike, still another GPU
        engine_cache_key(SHA, "10.3.0", "Orin (nvgpu)", precision="fp32"),
    }
    assert key not in others and len(others) == 5
    assert key.startswith(SHA[:16]) and "trt10.3.0" in key and "orin-nvgpu" in key
    assert all(c.isalnum() or c in "._-" for c in key)  # safe as a file name anywhere


def test_cache_key_needs_the_full_onnx_sha256():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        engine_cache_key(SHA[:12], "10.3.0", "Orin")
    with pytest.raises(ValueError, match="must not be empty"):
        engine_cache_key(SHA, "10.3.0", "")


def test_cache_layout(tmp_path: Path):
    key = engine_cache_key(SHA, "10.3.0", "Orin")
    assert engine_cache_path(tmp_path, key) == tmp_path / f"{key}.engine"


def test_engine_files_carry_metadata_in_a_sidecar_or_an_ultralytics_header(tmp_path: Path):
    ours = tmp_path / "a.engine"
    ours.write_bytes(b"\x00\x01engine")
    ours.with_suffix(".json").write_text(json.dumps({"metadata": {"names": "{0: 'helmet'}", "imgsz": "[320, 320]"}}))
    assert read_engine_file(ours) == ({"names": "{0: 'helmet'}", "imgsz": "[320, 320]"}, b"\x00\x01engine")

    header = json.dumps({"names": {"0": "helmet"}, "imgsz": [320, 320]}).encode()
    theirs = tmp_path / "b.engine"
    theirs.write_bytes(len(header).to_bytes(4, "little", signed=True) + header + b"ftrt-engine")
    meta, blob = read_engine_file(theirs)
    assert meta == {"names": {"0": "helmet"}, "imgsz": [320, 320]} and blob == b"ftrt-engine"

    bare = tmp_path / "c.engine"
    bare.write_bytes(b"ftrt" + b"\xff" * 64)
    assert read_engine_file(bare) == (None, b"ftrt" + b"\xff" * 64)


def test_class_thresholds_survive_from_the_onnx_into_the_engine_sidecar(tmp_path: Path):
    # What build_engine writes beside an engine, from the ONNX's own metadata (read as build_engine reads it).
    onnx_path = planted_onnx(tmp_path / "m.onnx", [(10, 10, 8, 8, 1, 0.1)], thresholds={"no_helmet": 0.08, "wear": 0.7})
    sidecar = engine_sidecar(tensorrt_engine._onnx_metadata(onnx_path), file_sha256(onnx_path),
                             tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", fp16=True)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00\x01engine")
    engine.with_suffix(SIDECAR_SUFFIX).write_text(json.dumps(sidecar))
    meta, blob = read_engine_file(engine)
    assert blob == b"\x00\x01engine" and meta is not None
    parsed = parse_metadata(meta)
    assert parsed.thresholds == {1: 0.08, 3: 0.7}  # what TensorRTDetector applies, as OnnxDetector does
    assert parsed.model_version == file_sha256(onnx_path)[:12] and parsed.names[3] == "wear"
    assert sidecar["onnx_sha256"] == file_sha256(onnx_path) and sidecar["tensorrt_version"] == "10.3.0"


# -- without TensorRT -----------------------------------------------------------------------------


def test_without_tensorrt_loading_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, even on a GPU machine
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    for attempt in (lambda: TensorRTDetector(engine), lambda: load_detector(engine)):
        with pytest.raises(TensorRTUnavailable, match=r"TensorRT is not installed.*backend='onnxruntime'"):
            attempt()
    with pytest.raises(TensorRTUnavailable):
        build_engine(tmp_path / "m.onnx", engine)
    assert issubclass(TensorRTUnavailable, ImportError)  # callers may catch either


def test_engine_shares_pre_and_post_processing_with_onnx_runtime():
    # The two backends differ only in who runs the network; same letterbox, same decoding.
    assert tensorrt_engine.preprocess is onnx_runtime.preprocess
    assert tensorrt_engine.postprocess is onnx_runtime.postprocess


# -- checking an engine against ONNX Runtime ---------------------------------------------------------


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


# -- on a GPU ----------------------------------------------------------------------------------------


@pytest.fixture
def gpu() -> None:
    reason = _gpu_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.gpu
@pytest.mark.usefixtures("gpu")
def test_engine_is_built_once_and_computes_what_onnx_runtime_computes(random_onnx: Path, tmp_path: Path):
    cache = tmp_path / "engines"
    engine_path = tensorrt_engine.ensure_engine(random_onnx, cache)
    assert engine_path.parent == cache and engine_path.suffix == ".engine"
    assert engine_path.with_suffix(".json").exists()
    built_at = engine_path.stat().st_mtime_ns
    assert tensorrt_engine.ensure_engine(random_onnx, cache) == engine_path
    assert engine_path.stat().st_mtime_ns == built_at  # cached: not rebuilt

    onnx_detector = OnnxDetector(random_onnx, providers=["CPUExecutionProvider"])
    with TensorRTDetector(engine_path) as engine:
        assert engine.names == onnx_detector.names
        assert engine.input_size == onnx_detector.input_size
        assert engine.model_version == file_sha256(random_onnx)[:12] == onnx_detector.model_version
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        tensor, _ = tensorrt_engine.preprocess(frame, engine.input_size)
        ours, reference = engine.infer(tensor), onnx_detector.infer(tensor)
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours[:, :4], reference[:, :4], atol=2.0)  # FP16: boxes within 2 px
        np.testing.assert_allclose(ours[:, 4:], reference[:, 4:], atol=0.02)
        assert isinstance(engine.detect(frame), sv.Detections)


@pytest.mark.gpu
@pytest.mark.usefixtures("gpu")
def test_trained_engine_passes_the_hot_swap_check(ppe_onnx: Path, val_frames: list[np.ndarray], tmp_path: Path):
    engine_path = tensorrt_engine.ensure_engine(ppe_onnx, tmp_path / "engines")
    onnx_detector = OnnxDetector(ppe_onnx, providers=["CPUExecutionProvider"])
    with TensorRTDetector(engine_path) as engine:
        assert verify_against_onnx(engine, onnx_detector, val_frames, box_tol_px=2.0)


@pytest.mark.gpu
@pytest.mark.usefixtures("gpu")
def test_an_engine_built_from_a_stamped_onnx_keeps_each_class_at_its_own_threshold(
    ppe_onnx: Path, val_frames: list[np.ndarray], tmp_path: Path
):
    stamped = with_thresholds(ppe_onnx, tmp_path / "stamped.onnx", {"helmet": 0.6, "no_wear": 0.05})
    engine_path = tensorrt_engine.ensure_engine(stamped, tmp_path / "engines")
    onnx_detector = OnnxDetector(stamped, providers=["CPUExecutionProvider"])
    with TensorRTDetector(engine_path) as engine:  # the thresholds come from the sidecar alone
        assert engine.thresholds == onnx_detector.thresholds == {0: 0.6, 2: 0.05}
        assert verify_against_onnx(engine, onnx_detector, val_frames, box_tol_px=2.0)
        low_no_wear = 0
        for frame in val_frames:
            dets = engine.detect(frame)
            names = dets.data["class_name"]
            assert (dets.confidence[names == "helmet"] >= np.float32(0.6)).all()
            low_no_wear += int(((names == "no_wear") & (dets.confidence <= 0.25)).sum())
        assert low_no_wear > 0
