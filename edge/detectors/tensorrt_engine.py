"""TensorRT backend: runs an FP16 engine built on the device (`engine_build.py`) with the ONNX backend's
pre- and post-processing, so both give the same boxes for the same network outputs.

GPU-ONLY CODE PATH. It needs TensorRT >= 10 and cuda-python (or pycuda), imported lazily so
that this module loads on any machine; the development machine has no GPU and runs none of it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from edge.detectors.cuda_runtime import import_tensorrt, load_cuda_runtime
from edge.detectors.engine_build import SIDECAR_SUFFIX
from edge.detectors.metadata import file_sha256, parse_metadata
from edge.detectors.postprocess import MAX_DET, postprocess
from edge.detectors.preprocess import preprocess


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
