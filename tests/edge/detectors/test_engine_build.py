"""The TensorRT engine cache: one engine per (ONNX, TensorRT version, GPU), and the sidecar that carries the
ONNX's metadata beside it. None of this needs a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.detectors import engine_build
from edge.detectors.engine_build import SIDECAR_SUFFIX, engine_cache_key, engine_cache_path, engine_sidecar
from edge.detectors.metadata import file_sha256, parse_metadata
from edge.detectors.tensorrt_engine import read_engine_file
from tests.edge.planted_model import planted_onnx

SHA = "ab" * 32


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


def test_class_thresholds_survive_from_the_onnx_into_the_engine_sidecar(tmp_path: Path):
    # What build_engine writes beside an engine, from the ONNX's own metadata (read as build_engine reads it).
    onnx_path = planted_onnx(tmp_path / "m.onnx", [(10, 10, 8, 8, 1, 0.1)], thresholds={"no_helmet": 0.08, "wear": 0.7})
    sidecar = engine_sidecar(engine_build._onnx_metadata(onnx_path), file_sha256(onnx_path),
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
