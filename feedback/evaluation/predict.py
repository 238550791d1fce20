"""Runs a detector (.pt or .onnx, through ultralytics) over images at mAP's low confidence.

Settings follow ultralytics' own val (conf 0.001, NMS IoU 0.7, 300 boxes) at the model's own imgsz,
letterboxed to the full square as the device's static ONNX export is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import supervision as sv
from rich.console import Console
from rich.progress import Progress

# ultralytics decides whether it is online when it is imported; evaluation must never reach the network.
os.environ.setdefault("YOLO_OFFLINE", "1")

from ultralytics import YOLO  # noqa: E402

VAL_CONF = 0.001  # mAP integrates over every confidence, so keep nearly every box
VAL_NMS_IOU = 0.7
VAL_MAX_DET = 300


@dataclass(frozen=True)
class Detector:
    model: YOLO
    path: Path
    names: tuple[str, ...]


def load_detector(path: Path) -> Detector:
    """A .pt checkpoint or an ultralytics-exported .onnx (its metadata carries names and imgsz)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    # task is given so an ONNX without metadata is not guessed at (and warned about).
    model = YOLO(str(path), task="detect")
    names = model.names  # for ONNX this loads the session once, via ultralytics' AutoBackend
    return Detector(model=model, path=path, names=tuple(names[i] for i in sorted(names)))


def predict_images(
    detector: Detector,
    paths: Sequence[Path],
    *,
    conf: float = VAL_CONF,
    iou: float = VAL_NMS_IOU,
    max_det: int = VAL_MAX_DET,
    imgsz: int | None = None,
    batch: int = 16,
    device: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, sv.Detections], tuple[int, int]]:
    """Detections per image stem (xyxy pixels of the original image), and the (h, w) the model ran at.

    Streams batches so memory stays flat however many images there are. imgsz None means the
    model's own: the checkpoint's training imgsz (.pt) or the export's input size (.onnx).
    """
    if not paths:  # ultralytics refuses an empty source; an empty folder simply has no detections
        return {}, (imgsz or 0, imgsz or 0)
    overrides: dict[str, object] = {"imgsz": imgsz} if imgsz else {}
    if device is not None:
        overrides["device"] = device
    results: dict[str, sv.Detections] = {}
    # rect=False: ultralytics letterboxes a .pt batch whose images share one shape to a smaller
    # rectangle, so an image's boxes would hang on its batch-mates (a fixed camera's holdout is all
    # one shape) and differ from what the devices' static square ONNX export sees.
    stream = detector.model.predict(
        [str(p) for p in paths],
        stream=True, conf=conf, iou=iou, max_det=max_det, batch=batch, rect=False, verbose=False, save=False,
        **overrides,
    )  # fmt: skip
    # stderr, so a CLI that prints JSON on stdout stays parseable.
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task(f"predicting {detector.path.name}", total=len(paths))
        for result in stream:
            results[Path(result.path).stem] = sv.Detections.from_ultralytics(result)
            bar.advance(task)
    used = detector.model.predictor.imgsz if detector.model.predictor else [0, 0]
    return results, (int(used[0]), int(used[1]))
