"""Shared test set-up: offline everywhere, and where the real data set lives."""

from __future__ import annotations

import os
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
