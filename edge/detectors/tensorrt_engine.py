"""TensorRT backend: builds an FP16 engine from the published ONNX on the device, caches it per
(ONNX sha256, TensorRT version, GPU), checks it against ONNX Runtime, and runs it.

GPU-ONLY CODE PATH. It needs TensorRT >= 10 and cuda-python (or pycuda), imported lazily so
that this module loads on any machine; the development machine has no GPU and runs none of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import supervision as sv

from edge.detectors.base import Detector, thresholds_of
from edge.detectors.metadata import MODEL_VERSION_KEY, file_sha256, parse_metadata
from edge.detectors.postprocess import MAX_DET, postprocess
from edge.detectors.preprocess import preprocess

log = logging.getLogger(__name__)

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"  # written beside each engine we build: its ONNX's metadata


class TensorRTUnavailable(ImportError):
    """TensorRT or a CUDA binding is not installed here: use the onnxruntime backend."""


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


# -- lazy imports ---------------------------------------------------------------------------


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a clear error saying what to install instead of a bare ImportError."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "The tensorrt backend needs NVIDIA TensorRT >= 10 and an NVIDIA GPU. TensorRT is not "
            "installed here (JetPack ships it on a Jetson; on x86 install the `tensorrt` wheel "
            "matching your CUDA). Use backend='onnxruntime' with the .onnx file instead."
        ) from exc
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; this backend uses the TensorRT 10 tensor API")
    return trt


class CudaRuntime(Protocol):
    """The few CUDA calls an engine needs: buffers, copies on one stream, the GPU's name."""

    stream_handle: int

    def gpu_name(self) -> str: ...
    def device_empty(self, nbytes: int) -> int: ...
    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...
    def to_device(self, dst: int, src: np.ndarray) -> None: ...
    def to_host(self, dst: np.ndarray, src: int) -> None: ...
    def synchronize(self) -> None: ...
    def current(self) -> contextlib.AbstractContextManager[None]: ...
    def close(self) -> None: ...


class _CudaPython:
    """NVIDIA's cuda-python runtime bindings (`cuda.bindings.runtime`; `cuda.cudart` before 12.6).

    The runtime API uses the device's primary context from any thread, which is also the
    context TensorRT uses, so nothing needs pushing.
    """

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # cuda-python < 12.6
        self._rt = rt
        self._device: list[int] = []
        self._pinned: list[int] = []
        self._stream = self._check(rt.cudaStreamCreate())
        self.stream_handle = int(self._stream)

    def _check(self, result: tuple) -> Any:
        err, *values = result
        if err != self._rt.cudaError_t.cudaSuccess:
            message = self._rt.cudaGetErrorString(err)[1]
            raise RuntimeError(f"CUDA error {err}: {message.decode(errors='replace')}")
        return values[0] if len(values) == 1 else None

    def gpu_name(self) -> str:
        props = self._check(self._rt.cudaGetDeviceProperties(0))
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).split("\0")[0].strip()

    def device_empty(self, nbytes: int) -> int:
        ptr = self._check(self._rt.cudaMalloc(max(nbytes, 1)))
        self._device.append(ptr)
        return int(ptr)

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        # Page-locked host memory: the only kind a copy can overlap with the GPU's work.
        nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        ptr = self._check(self._rt.cudaMallocHost(nbytes))
        self._pinned.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self._stream))

    def to_host(self, dst: np.ndarray, src: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self._stream))

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream))

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        self.synchronize()
        for ptr in self._device:
            self._rt.cudaFree(ptr)
        for ptr in self._pinned:
            self._rt.cudaFreeHost(ptr)
        self._device, self._pinned = [], []
        self._rt.cudaStreamDestroy(self._stream)


class _PyCuda:
    """pycuda, for older JetPacks without cuda-python. Works in the device's primary
    context (the one TensorRT uses), made current around each use so any thread may call."""

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(0).retain_primary_context()
        self._allocs: list[Any] = []
        with self.current():
            self._stream = cuda.Stream()
        self.stream_handle = int(self._stream.handle)

    def gpu_name(self) -> str:
        return str(self._cuda.Device(0).name())

    def device_empty(self, nbytes: int) -> int:
        with self.current():
            alloc = self._cuda.mem_alloc(max(nbytes, 1))
        self._allocs.append(alloc)
        return int(alloc)

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        with self.current():
            return self._cuda.pagelocked_empty(shape, dtype)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(dst, src, self._stream)

    def to_host(self, dst: np.ndarray, src: int) -> None:
        self._cuda.memcpy_dtoh_async(dst, src, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def close(self) -> None:
        with self.current():
            self._stream.synchronize()
            for alloc in self._allocs:
                alloc.free()
        self._allocs = []


def load_cuda_runtime() -> CudaRuntime:
    """cuda-python when importable, else pycuda; a clear error when neither is."""
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _PyCuda()
    except ImportError as exc:
        raise TensorRTUnavailable(
            "The tensorrt backend needs a CUDA binding for its buffers: install `cuda-python` "
            "(or `pycuda` on older JetPacks)."
        ) from exc


def gpu_name() -> str:
    """Name of GPU 0 as CUDA reports it (part of the engine cache key)."""
    cuda = load_cuda_runtime()
    try:
        return cuda.gpu_name()
    finally:
        cuda.close()


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
    _write_atomically(engine_path.with_suffix(SIDECAR_SUFFIX), json.dumps(sidecar, indent=2).encode())
    _write_atomically(engine_path, bytes(serialized))  # the engine last: its presence means "complete"
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


def _write_atomically(path: Path, data: bytes) -> None:
    # A half-written engine must never be found in the cache after a power cut.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_engine(onnx_path: str | Path, cache_dir: str | Path, *, fp16: bool = True, workspace_gb: float = 2) -> Path:
    """The cached engine for this ONNX on this device, built first if it is not there yet."""
    trt = import_tensorrt()
    key = engine_cache_key(file_sha256(onnx_path), trt.__version__, gpu_name(), precision="fp16" if fp16 else "fp32")
    path = engine_cache_path(cache_dir, key)
    if not path.exists():
        log.info("building TensorRT engine %s from %s", path.name, Path(onnx_path).name)
        build_engine(onnx_path, path, fp16=fp16, workspace_gb=workspace_gb)
    return path


# -- running --------------------------------------------------------------------------------


def read_engine_file(path: str | Path) -> tuple[dict[str, Any] | None, bytes]:
    """(metadata, serialized engine) of an engine file.

    Ultralytics' own `.engine` exports start with a 4-byte little-endian length and that
    many bytes of JSON metadata; engines we build are bare, with a `.json` sidecar.
    """
    path = Path(path)
    data = path.read_bytes()
    n = int.from_bytes(data[:4], "little", signed=True)
    if 0 < n < len(data) - 4:
        try:
            meta = json.loads(data[4 : 4 + n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if isinstance(meta, dict):
            return meta, data[4 + n :]
    sidecar = path.with_suffix(SIDECAR_SUFFIX)
    if sidecar.exists():
        return json.loads(sidecar.read_text()).get("metadata"), data
    return None, data


class TensorRTDetector:
    """A TensorRT engine run with the name-based tensor API of TensorRT 10 (GPU only).

    Pre- and post-processing are the ONNX backend's, so both give the same boxes for the
    same network outputs, per-class thresholds included (they travel in the sidecar, as the
    ONNX's metadata). One inference at a time (a lock guards the shared buffers).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = MAX_DET,
        metadata: Mapping[str, Any] | None = None,
        class_thresholds: bool = True,
    ) -> None:
        trt = import_tensorrt()
        self.path = Path(path)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        header, blob = read_engine_file(self.path)
        self.metadata = parse_metadata(metadata or header or {})
        self._cuda = load_cuda_runtime()
        self._lock = threading.Lock()
        try:
            self._load(trt, blob)
        except BaseException:
            self._cuda.close()  # do not leak the stream and buffers of a refused engine
            raise

        in_shape = self._host[self._input].shape
        self.input_size: tuple[int, int] = (int(in_shape[2]), int(in_shape[3]))
        out_shape = self._host[self._output].shape
        self.names: dict[int, str] = self.metadata.names or {i: str(i) for i in range(out_shape[1] - 4)}
        # The ONNX's version (kept in the sidecar) so that captures name the model, not the build.
        self.model_version: str = self.metadata.model_version or file_sha256(self.path)[:12]
        self.thresholds: dict[int, float] = dict(self.metadata.thresholds) if class_thresholds else {}

    def _load(self, trt: Any, blob: bytes) -> None:
        """Deserialize the engine and give each of its tensors a pinned host and a device buffer."""
        with self._cuda.current():
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(blob)
            if self._engine is None:
                raise RuntimeError(
                    f"TensorRT {trt.__version__} could not load {self.path.name}: engines only load on the "
                    "TensorRT version and GPU that built them; rebuild it from the ONNX"
                )
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
            inputs = [n for n in names if is_input[n]]
            self._outputs = [n for n in names if not is_input[n]]
            if len(inputs) != 1 or not self._outputs:
                raise ValueError(f"{self.path.name}: expected one image input and a detection output, got {names}")
            self._input = inputs[0]
            self._output = "output0" if "output0" in self._outputs else self._outputs[0]

            shape = tuple(self._engine.get_tensor_shape(self._input))
            if any(d < 0 for d in shape):  # dynamic engine: run one frame at the exported size
                h, w = self.metadata.imgsz or (640, 640)
                self._context.set_input_shape(self._input, (1, shape[1] if shape[1] > 0 else 3, h, w))
            self._host: dict[str, np.ndarray] = {}
            self._device: dict[str, int] = {}
            for name in names:
                dims = tuple(self._context.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                self._host[name] = self._cuda.host_empty(dims, dtype)
                self._device[name] = self._cuda.device_empty(self._host[name].nbytes)
                self._context.set_tensor_address(name, self._device[name])

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The raw head output for one preprocessed (1, 3, h, w) tensor (a copy)."""
        with self._lock, self._cuda.current():
            np.copyto(self._host[self._input], tensor, casting="same_kind")
            self._cuda.to_device(self._device[self._input], self._host[self._input])
            if not self._context.execute_async_v3(self._cuda.stream_handle):
                raise RuntimeError(f"TensorRT failed to run {self.path.name}")
            for name in self._outputs:
                self._cuda.to_host(self._host[name], self._device[name])
            self._cuda.synchronize()
            return self._host[self._output].copy()

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        tensor, box = preprocess(frame_bgr, self.input_size)
        output = self.infer(tensor)
        return postprocess(
            output, box, self.names, conf=self.conf, iou=self.iou, max_det=self.max_det, end2end=self.metadata.end2end,
            thresholds=self.thresholds,
        )

    def close(self) -> None:
        """Free the GPU buffers (the detector is unusable afterwards)."""
        with self._lock:
            del self._context, self._engine, self._runtime
            self._cuda.close()

    def __enter__(self) -> TensorRTDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- checking before a hot swap ---------------------------------------------------------------


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
