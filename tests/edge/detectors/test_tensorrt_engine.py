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
from edge.detectors.agreement import verify_against_onnx
from edge.detectors.cuda_runtime import TensorRTUnavailable, gpu_name, import_tensorrt
from edge.detectors.engine_build import build_engine, ensure_engine
from edge.detectors.metadata import file_sha256
from edge.detectors.onnx_runtime import OnnxDetector
from edge.detectors.tensorrt_engine import TensorRTDetector, read_engine_file
from tests.edge.planted_model import with_thresholds


def _gpu_skip_reason() -> str | None:
    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        return f"needs TensorRT and an NVIDIA GPU: TensorRT is not importable ({exc.__cause__ or exc})"
    try:
        gpu_name()
    except (TensorRTUnavailable, RuntimeError) as exc:
        return f"needs an NVIDIA GPU: CUDA reports none ({exc})"
    return None


# -- engine files ---------------------------------------------------------------------------------


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
    engine_path = ensure_engine(random_onnx, cache)
    assert engine_path.parent == cache and engine_path.suffix == ".engine"
    assert engine_path.with_suffix(".json").exists()
    built_at = engine_path.stat().st_mtime_ns
    assert ensure_engine(random_onnx, cache) == engine_path
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
    engine_path = ensure_engine(ppe_onnx, tmp_path / "engines")
    onnx_detector = OnnxDetector(ppe_onnx, providers=["CPUExecutionProvider"])
    with TensorRTDetector(engine_path) as engine:
        assert verify_against_onnx(engine, onnx_detector, val_frames, box_tol_px=2.0)


@pytest.mark.gpu
@pytest.mark.usefixtures("gpu")
def test_an_engine_built_from_a_stamped_onnx_keeps_each_class_at_its_own_threshold(
    ppe_onnx: Path, val_frames: list[np.ndarray], tmp_path: Path
):
    stamped = with_thresholds(ppe_onnx, tmp_path / "stamped.onnx", {"helmet": 0.6, "no_wear": 0.05})
    engine_path = ensure_engine(stamped, tmp_path / "engines")
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
