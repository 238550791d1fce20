"""Fixtures for the evaluation tests: generated scenes, and the real PPE model where it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from feedback.scenes import write_yolo_dataset

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = Path(os.environ.get("EDGELOOP_MODELS_DIR") or REPO.parent / "shared" / "models")
    if not (path / "ppe_base.pt").is_file():
        pytest.skip(f"the trained PPE checkpoint is absent at {path} (set EDGELOOP_MODELS_DIR)")
    return path


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sixteen generated frames with exact boxes, images/ + labels/ + data.yaml."""
    return write_yolo_dataset(tmp_path_factory.mktemp("scenes"), range(16))
