"""ONNX Runtime backend: runs an ultralytics ONNX export on the device, with the best execution
provider present (TensorRT, then CUDA, then CPU); also the reference a TensorRT engine is checked against.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import supervision as sv

from edge.detectors.metadata import ModelMetadata, file_sha256, parse_metadata
from edge.detectors.postprocess import MAX_DET, postprocess
from edge.detectors.preprocess import Letterbox, letterbox, preprocess, to_tensor

Provider = str | tuple[str, dict]
_DEFAULT_INPUT = (640, 640)  # ultralytics' default imgsz, for a dynamic model without metadata


def default_trt_cache_dir() -> Path:
    """Where ORT's TensorRT provider keeps the engines it builds (minutes on a Jetson: build once)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeloop" / "ort-tensorrt"


def select_providers(available: Sequence[str], trt_cache_dir: str | Path | None = None) -> list[Provider]:
    """The fastest execution providers among `available`, best first, CPU always last."""
    chosen: list[Provider] = []
    if "TensorrtExecutionProvider" in available:
        cache = Path(trt_cache_dir) if trt_cache_dir else default_trt_cache_dir()
        options = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
        }
        chosen.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    chosen.append("CPUExecutionProvider")
    return chosen


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """Options for one camera's inference loop on a small device.

    All graph optimisations (fusions matter on a CPU); one inter-op thread, since a YOLO
    graph is a chain and parallel branches would only compete with the capture threads;
    `intra_op_threads` 0 lets ONNX Runtime use one thread per physical core.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    return opts


class OnnxDetector:
    """An ultralytics ONNX detection model run by ONNX Runtime.

    Matches `YOLO(path).predict(frame, conf=conf, iou=iou)` on the same file: same
    letterbox, same decoding, same class-aware NMS. A model stamped with per-class thresholds
    keeps each of those classes at its own (`thresholds`), the rest at `conf`;
    `class_thresholds=False` ignores them and keeps every class at `conf`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = MAX_DET,
        providers: Sequence[Provider] | None = None,
        intra_op_threads: int = 0,
        trt_cache_dir: str | Path | None = None,
        class_thresholds: bool = True,
    ) -> None:
        self.path = Path(path)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.onnx_sha256 = file_sha256(self.path)
        chosen = list(providers) if providers else select_providers(ort.get_available_providers(), trt_cache_dir)
        self.session = ort.InferenceSession(str(self.path), session_options(intra_op_threads), providers=chosen)

        self.metadata: ModelMetadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.task not in (None, "detect"):
            raise ValueError(f"{self.path.name} is a {self.metadata.task!r} model; the edge runs detection models")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self._input_name, self._output_name = inp.name, out.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        # A static batch of 1 (ultralytics' default export) takes frames one at a time;
        # a dynamic batch (`dynamic=True`) takes a whole batch in one run.
        self._batch_fixed = isinstance(inp.shape[0], int)
        if self._batch_fixed and inp.shape[0] != 1:
            raise ValueError(
                f"{self.path.name} has a fixed batch of {inp.shape[0]}: export it with batch=1 or dynamic=True"
            )
        hw = inp.shape[2:4]
        self.input_size: tuple[int, int] = (
            (int(hw[0]), int(hw[1])) if all(isinstance(d, int) for d in hw) else self.metadata.imgsz or _DEFAULT_INPUT
        )
        self.names: dict[int, str] = self.metadata.names or self._numbered_names(out.shape)
        self.model_version: str = self.metadata.model_version or self.onnx_sha256[:12]
        self.thresholds: dict[int, float] = dict(self.metadata.thresholds) if class_thresholds else {}

    @staticmethod
    def _numbered_names(output_shape: Sequence[int | str | None]) -> dict[int, str]:
        channels = output_shape[1]
        if not isinstance(channels, int) or channels <= 4:
            raise ValueError("the model has no class names in its metadata and no static class count")
        return {i: str(i) for i in range(channels - 4)}

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, best first."""
        return self.session.get_providers()

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The raw head output for a preprocessed (n, 3, h, w) tensor."""
        feed = {self._input_name: tensor.astype(self._input_dtype, copy=False)}
        return self.session.run([self._output_name], feed)[0]

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        tensor, box = preprocess(frame_bgr, self.input_size)
        return self._decode(self.infer(tensor), box)

    def detect_batch(self, frames_bgr: Sequence[np.ndarray]) -> list[sv.Detections]:
        if self._batch_fixed or len(frames_bgr) <= 1:
            return [self.detect(frame) for frame in frames_bgr]
        fitted = [letterbox(frame, self.input_size) for frame in frames_bgr]
        outputs = self.infer(to_tensor([img for img, _ in fitted]))
        return [self._decode(outputs[i : i + 1], box) for i, (_, box) in enumerate(fitted)]

    def _decode(self, output: np.ndarray, box: Letterbox) -> sv.Detections:
        return postprocess(
            output, box, self.names, conf=self.conf, iou=self.iou, max_det=self.max_det, end2end=self.metadata.end2end,
            thresholds=self.thresholds,
        )
