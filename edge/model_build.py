"""Turning a fetched model into a runtime the device can trust: an ONNX Runtime session or a TensorRT engine
(built in a child process), checked against its manifest and the publisher's reference frames before it may run.

`python -m edge.model_build build-engine ONNX CACHE_DIR` is that child process.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import supervision as sv

from edge.detectors.agreement import detections_agree
from edge.detectors.base import Detector, thresholds_of
from edge.detectors.cuda_runtime import TensorRTUnavailable, gpu_name, import_tensorrt
from edge.detectors.engine_build import ensure_engine
from edge.detectors.load import load_detector
from edge.detectors.metadata import ModelMetadata
from edge.protocol import ArtifactManifest, ReferenceSet
from edge.refusal import Refused

UpdateBackend = Literal["auto", "onnxruntime", "tensorrt"]


def reference_mismatch(detector: Detector, reference: ReferenceSet,
                       before_each: Callable[[], object] = lambda: None) -> str | None:
    """None when `detector` finds on every reference frame what the publisher's ONNX Runtime found there;
    otherwise the first difference. `before_each` runs before each frame (the updater waits for a gap there).

    The reference was made at `reference.conf`, with or without the model's per-class thresholds (a
    publisher may apply them); the device may run a class at yet another threshold (`--confidence`).
    Each class is compared where every one of those keeps boxes, from the highest up: a box below
    that may exist on one side only, as a box near the threshold may."""
    default = float(getattr(detector, "conf", reference.conf))
    running, stamped = thresholds_of(detector), _model_thresholds(detector)
    comparable = {c: max(reference.conf, running.get(c, default), stamped.get(c, 0.0)) for c in detector.names}
    for frame in reference.frames:
        before_each()
        image = cv2.imdecode(np.frombuffer(base64.b64decode(frame.png_base64), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return f"reference frame {frame.name} does not decode"
        expected = sv.Detections(
            xyxy=np.array([d.xyxy for d in frame.detections], dtype=np.float32).reshape(-1, 4),
            confidence=np.array([d.confidence for d in frame.detections], dtype=np.float32),
            class_id=np.array([d.class_id for d in frame.detections], dtype=np.int64),
        )
        ok, why = detections_agree(expected, detector.detect(image), box_tol_px=reference.box_tol_px,
                                   conf_tol=reference.conf_tol, conf_threshold=max(reference.conf, default),
                                   class_thresholds=comparable)
        if not ok:
            return f"reference frame {frame.name}: {why}"
    return None


def _model_thresholds(detector: Detector) -> dict[int, float]:
    """The per-class thresholds stamped in the model, whether or not the detector applies them."""
    metadata = getattr(detector, "metadata", None)
    return dict(metadata.thresholds) if isinstance(metadata, ModelMetadata) else thresholds_of(detector)


def thresholds_mismatch(detector: Detector, manifest: ArtifactManifest) -> str | None:
    """None when the model carries the per-class thresholds its manifest announces (or the manifest,
    an older one, announces none); otherwise what differs. Read from the model's own metadata, so a
    device told to ignore them (`--confidence`) still refuses an artifact that contradicts itself."""
    if manifest.thresholds is None:
        return None
    named = {detector.names.get(c, str(c)): t for c, t in _model_thresholds(detector).items()}
    announced = manifest.thresholds
    if named.keys() != announced.keys() or any(abs(named[k] - announced[k]) > 1e-9 for k in named):
        return (f"the model's own thresholds {dict(sorted(named.items()))} "
                f"are not the manifest's {dict(sorted(announced.items()))}")
    return None


def tensorrt_usable() -> bool:
    """TensorRT imports and CUDA sees a GPU."""
    try:
        import_tensorrt()
        gpu_name()
    except (TensorRTUnavailable, RuntimeError, OSError):
        return False
    return True


def close_detector(detector: Detector) -> None:
    """Free a model's runtime (GPU buffers, a session) if it has one to free; never raises."""
    close = getattr(detector, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


class ModelBuilder:
    """Loads models at the agent's operating point (`conf`, `iou`, and their own per-class thresholds or
    not), on `backend`; TensorRT engines are cached in `engines`. `pace` runs before a build and between
    reference frames (the updater waits for a gap between frames there)."""

    def __init__(self, engines: Path, *, backend: UpdateBackend, conf: float, iou: float, class_thresholds: bool,
                 pace: Callable[[], object]) -> None:
        self.engines = engines
        self.engines.mkdir(parents=True, exist_ok=True)
        self._backend: UpdateBackend | None = None if backend == "auto" else backend
        self.conf, self.iou, self.class_thresholds = conf, iou, class_thresholds
        self._pace = pace
        self._child: subprocess.Popen | None = None

    def load(self, path: Path, backend: UpdateBackend = "auto") -> Detector:
        """A model file at the agent's operating point."""
        return load_detector(path, backend=backend, conf=self.conf, iou=self.iou,
                             class_thresholds=self.class_thresholds)

    def build(self, folder: Path) -> Detector:
        """The runtime for the ONNX in `folder`: an ONNX Runtime session, or a TensorRT FP16 engine built
        (once, cached) in a child process, so that a minutes-long build neither holds this process's
        interpreter nor takes it down if TensorRT crashes."""
        if self._backend is None:  # auto: TensorRT where it imports and sees a GPU, else ONNX Runtime
            self._backend = "tensorrt" if tensorrt_usable() else "onnxruntime"
        onnx = folder / "model.onnx"
        if self._backend == "onnxruntime":
            return self.load(onnx, backend="onnxruntime")
        return self.load(self._build_engine(onnx), backend="tensorrt")

    def build_checked(self, folder: Path, manifest: ArtifactManifest, on_verify: Callable[[], object]) -> Detector:
        """`build(folder)`, then checked against `manifest` and the reference frames beside it; `on_verify`
        runs between the two. Anything wrong is `Refused`, and the runtime is closed again."""
        try:
            self._pace()
            detector = self.build(folder)
        except Refused:
            raise
        except Exception as exc:  # ONNX Runtime and TensorRT raise many kinds for a file that is not a model
            raise Refused(f"it does not load: {type(exc).__name__}: {exc}") from exc
        on_verify()
        try:
            names = [detector.names[i] for i in sorted(detector.names)]
            if names != manifest.classes:
                raise Refused(f"the model's own classes {names} are not the manifest's {manifest.classes}")
            if tuple(detector.input_size) != tuple(manifest.input_size):
                raise Refused(f"its input {detector.input_size} is not the manifest's {manifest.input_size}")
            if why := thresholds_mismatch(detector, manifest):
                raise Refused(why)
            reference = ReferenceSet.model_validate_json((folder / "reference.json").read_bytes())
            if why := reference_mismatch(detector, reference, self._pace):
                raise Refused(f"failed its reference check: {why}")
        except BaseException:
            close_detector(detector)
            raise
        return detector

    def kill(self) -> None:
        """Stop an engine build under way: it can take minutes, and its cache write is atomic anyway."""
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def _build_engine(self, onnx: Path) -> Path:
        cmd = [sys.executable, "-m", "edge.model_build", "build-engine", str(onnx), str(self.engines)]
        self._child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = self._child.communicate()
        code, self._child = self._child.returncode, None
        if code != 0:
            raise Refused(f"TensorRT could not build an engine from it: {err.strip()[-500:]}")
        return Path(out.strip().splitlines()[-1])


def _main(argv: list[str]) -> int:
    """`python -m edge.model_build build-engine ONNX CACHE_DIR`: the child process that builds an engine."""
    if len(argv) != 3 or argv[0] != "build-engine":
        print("usage: python -m edge.model_build build-engine ONNX CACHE_DIR", file=sys.stderr)
        return 2
    os.nice(10)  # the camera's frame loop comes first
    print(ensure_engine(argv[1], argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
