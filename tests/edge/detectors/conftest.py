"""Models and frames for the detector tests: ONNX exports made once per session, real PPE images.

`ppe_pt`, `ppe_onnx` and `ppe_dir` (tests/conftest.py) find shared/models and shared/datasets/ppe, or
skip saying which is absent; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

# Before ultralytics is imported anywhere: no telemetry, no update checks, no downloads.
os.environ.setdefault("YOLO_OFFLINE", "1")

IMGSZ = 320
N_PARITY_IMAGES = 10


def _export_onnx(weights: Path, folder: Path, **options: object) -> Path:
    """`YOLO(weights).export(format="onnx", imgsz=320)` from a copy in `folder`.

    Export writes beside its input: a private copy keeps other tests' exports of the same
    checkpoint from overwriting this one.
    """
    from ultralytics import YOLO

    pt = folder / weights.name
    if pt != weights:
        shutil.copyfile(weights, pt)
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ, verbose=False, **options))


@pytest.fixture(scope="session")
def ppe_dynamic_onnx(ppe_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint exported with a dynamic batch and input size."""
    return _export_onnx(ppe_pt, tmp_path_factory.mktemp("ppe_dynamic"), dynamic=True)


@pytest.fixture(scope="session")
def random_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n with random weights (80 COCO classes): shapes and metadata, never skipped."""
    from ultralytics import YOLO

    workdir = tmp_path_factory.mktemp("random")
    model = YOLO("yolov8n.yaml")  # built from the yaml: no weights are fetched
    pt = workdir / "yolov8n_random.pt"
    model.save(str(pt))
    return _export_onnx(pt, workdir)


@pytest.fixture(scope="session")
def val_frames(ppe_dir: Path) -> list[np.ndarray]:
    """The first real validation images, in their various sizes (BGR, as a camera gives them)."""
    images = sorted((ppe_dir / "val" / "images").glob("*.jpg"))[:N_PARITY_IMAGES]
    return [cv2.imread(str(p)) for p in images]
