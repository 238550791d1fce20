"""TensorRT engines built on the device: an FP16 engine from the published ONNX, cached per
(ONNX sha256, TensorRT version, GPU), with its ONNX's metadata in a sidecar beside it.

GPU-ONLY CODE PATH: `build_engine` and `ensure_engine` need TensorRT and a GPU; the cache layout runs anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.detectors.cuda_runtime import gpu_name, import_tensorrt
from edge.detectors.metadata import MODEL_VERSION_KEY, file_sha256, parse_metadata
from edge.durable import write_atomically

log = logging.getLogger(__name__)

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"  # written beside each engine we build: its ONNX's metadata


# -- cache layout ---------------------------------------------------------------------------

_SLUG = re.compile(r"[^A-Za-z0-9.]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, *, precision: str = "fp16") -> str:
    """The file stem of the engine built from one ONNX, by one TensorRT, for one GPU model.

    An engine is only valid for the exact TensorRT version and GPU it was built with, so
    all three name it. The readable parts are slugs (for people listing the cache); the
    trailing digest covers the exact strings, so two GPU names that slug alike never share
    an engine.
    """
    if not _SHA256.fullmatch(onnx_sha256):
        raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, got {onnx_sha256!r}")
    if not trt_version or not gpu_name:
        raise ValueError("trt_version and gpu_name must not be empty")
    exact = "\0".join((onnx_sha256, trt_version, gpu_name, precision))
    digest = hashlib.sha256(exact.encode()).hexdigest()[:8]
    gpu = _SLUG.sub("-", gpu_name).strip("-").lower()[:40]
    version = _SLUG.sub("-", trt_version).strip("-")
    return f"{onnx_sha256[:16]}_trt{version}_{gpu}_{precision}_{digest}"


def engine_cache_path(cache_dir: str | Path, key: str) -> Path:
    """`<cache>/<key>.engine`; its metadata sidecar is `<cache>/<key>.json`."""
    return Path(cache_dir) / f"{key}{ENGINE_SUFFIX}"


# -- building ---------------------------------------------------------------------------------


def _onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The ultralytics metadata of an ONNX file, read with ONNX Runtime (the `onnx` package is
    not on the device)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, fp16: bool = True, workspace_gb: float = 2) -> Path:
    """Build a TensorRT engine from an ONNX file on this device and write it atomically.

    Also writes `<engine>.json` with the ONNX's metadata (class names, input size, model
    version), so the engine can be loaded without its ONNX. Takes minutes on a Jetson.
    """
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        else:  # TensorRT 11 removed weak typing: precision must already be in the ONNX graph
            log.warning("TensorRT %s has no FP16 builder flag; building in the ONNX's own precision", trt.__version__)

    meta = _onnx_metadata(onnx_path)
    parsed = parse_metadata(meta)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:  # a dynamic export: fix it to one frame at the exported size, as the device runs it
        h, w = parsed.imgsz or (640, 640)
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            shape = (1, tensor.shape[1] if tensor.shape[1] > 0 else 3, h, w)
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")

    sidecar = engine_sidecar(meta, file_sha256(onnx_path), tensorrt_version=trt.__version__,
                             gpu_name=gpu_name(), fp16=fp16)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    # A half-written engine must never be found in the cache after a power cut.
    write_atomically(engine_path.with_suffix(SIDECAR_SUFFIX), json.dumps(sidecar, indent=2).encode())
    write_atomically(engine_path, bytes(serialized))  # the engine last: its presence means "complete"
    return engine_path


def engine_sidecar(
    meta: Mapping[str, str], onnx_sha256: str, *, tensorrt_version: str, gpu_name: str, fp16: bool
) -> dict[str, Any]:
    """The `<engine>.json` of an engine built from an ONNX whose metadata is `meta`.

    Every key of the ONNX's metadata is kept as it was (class names, input size, per-class
    thresholds, ...), so the engine runs exactly as its ONNX would; the model version is filled
    in from the ONNX's hash when the control plane did not stamp one.
    """
    version = parse_metadata(meta).model_version or onnx_sha256[:12]
    return {
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "fp16": fp16,
        "metadata": {**meta, MODEL_VERSION_KEY: version},
    }


def ensure_engine(onnx_path: str | Path, cache_dir: str | Path, *, fp16: bool = True, workspace_gb: float = 2) -> Path:
    """The cached engine for this ONNX on this device, built first if it is not there yet."""
    trt = import_tensorrt()
    key = engine_cache_key(file_sha256(onnx_path), trt.__version__, gpu_name(), precision="fp16" if fp16 else "fp32")
    path = engine_cache_path(cache_dir, key)
    if not path.exists():
        log.info("building TensorRT engine %s from %s", path.name, Path(onnx_path).name)
        build_engine(onnx_path, path, fp16=fp16, workspace_gb=workspace_gb)
    return path
