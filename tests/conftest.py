"""Shared test set-up: offline everywhere, and where the real data set lives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never let ultralytics or any hub reach for the network from a test.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_dir(name: str, env: str) -> Path:
    return Path(os.environ.get(env) or REPO.parent / "shared" / name)


@pytest.fixture(scope="session")
def ppe_dir() -> Path:
    path = shared_dir("datasets/ppe", "EDGELOOP_PPE_DIR")
    if not (path / "val" / "images").is_dir():
        pytest.skip(f"the PPE data set is absent at {path} (set EDGELOOP_PPE_DIR)")
    return path


@pytest.fixture(scope="session")
def scene_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLOv8n checkpoint for the generated scenes' classes with random (seeded) weights."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from feedback.scenes import CLASSES

    model = YOLO("yolov8n.yaml")  # built from the packaged yaml: nothing is fetched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.model = DetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False)
    model.model.names = dict(enumerate(CLASSES))
    pt = tmp_path_factory.mktemp("scene_model") / "scene_random.pt"
    model.save(str(pt))
    return pt


@pytest.fixture(scope="session")
def scene_onnx(scene_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`scene_pt` exported to ONNX at imgsz 160.

    Random weights detect nothing above 0.25: tests that use it drive uploads by other triggers.
    """
    import shutil

    from ultralytics import YOLO

    pt = tmp_path_factory.mktemp("scene_onnx") / scene_pt.name
    shutil.copyfile(scene_pt, pt)  # export writes beside its input
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=160, verbose=False))


@pytest.fixture(scope="session")
def ppe_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the checkpoint trained on ppe/base (export writes beside its input)."""
    import shutil

    source = shared_dir("models", "EDGELOOP_MODELS_DIR") / "ppe_base.pt"
    if not source.exists():
        pytest.skip(f"trained checkpoint {source} is absent (set EDGELOOP_MODELS_DIR)")
    pt = tmp_path_factory.mktemp("ppe") / source.name
    shutil.copyfile(source, pt)
    return pt


@pytest.fixture(scope="session")
def ppe_onnx(ppe_pt: Path) -> Path:
    """The PPE checkpoint exported to ONNX at imgsz 320, as the control plane publishes it."""
    from ultralytics import YOLO

    return Path(YOLO(str(ppe_pt)).export(format="onnx", imgsz=320, verbose=False))


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real, ephemeral Prefect API shared by every test that runs a flow: one per session, never two.

    Prefect's events worker is a process-wide singleton bound to the API URL it first saw; a second harness would
    leave task-run events flowing to the first server while the tests read the second.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
