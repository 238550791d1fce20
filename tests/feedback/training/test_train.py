"""Training for real (ultralytics, CPU, tiny) on generated scenes: weights and lineage are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from feedback.training.train import TrainingError, train
from store.models import get_model
from store.settings import Settings, Workspace

TINY = {"epochs": 1, "imgsz": 128, "batch": 8, "workers": 0}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("train")
    ws = Workspace(Settings(workspace=root / "ws"))
    import_yolo(ws, write_yolo_dataset(root / "t", range(24)), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(root / "h", range(500, 506)), "holdout", progress=False)
    return ws


def test_first_model_from_yaml_then_a_child_from_it(ws: Workspace) -> None:
    epochs_seen: list[tuple[int, int]] = []
    first = train(ws, parent=None, overrides=TINY, progress=lambda e, n: epochs_seen.append((e, n)))
    assert epochs_seen == [(1, 1)]
    assert first.parent_id is None and first.dataset_version == 1
    assert ws.blobs.exists(first.weights_sha256)
    with ws.catalog.connect() as con:
        record = get_model(con, first.model_id)
        run = con.execute("SELECT profile, dataset_version, duration_s, params->>'mixup' FROM training_runs "
                          "WHERE model_id = ?", [first.model_id]).fetchone()
    assert record.status == "candidate" and record.imgsz == 128 and record.classes[1] == "no_helmet"
    assert run[0] == "cpu" and run[1] == 1 and run[2] > 0 and float(run[3]) == 0.2

    child = train(ws, parent=first.model_id, overrides=TINY)
    assert child.parent_id == first.model_id and child.weights_sha256 != first.weights_sha256


def test_unknown_parent_and_profile_are_refused(ws: Workspace) -> None:
    with pytest.raises(TrainingError, match="m-nope"):
        train(ws, parent="m-nope", overrides=TINY)
    with pytest.raises(TrainingError, match="tpu"):
        train(ws, profile="tpu")


def test_no_download_is_attempted(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training offline must never reach for the network (fonts, weights, telemetry)."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert train(ws, parent=None, overrides=TINY).model_id.startswith("m-")


def test_a_relative_workspace_trains_inside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgeloop demo` and the README use a workspace relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    ws = Workspace(Settings(workspace=Path("rel-ws")))
    import_yolo(ws, write_yolo_dataset(tmp_path / "t", range(8)), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "h", range(500, 502)), "holdout", progress=False)
    result = train(ws, parent=None, overrides=TINY)
    assert ws.blobs.exists(result.weights_sha256)
    assert list((tmp_path / "rel-ws" / "runs").glob("*/train/weights/last.pt"))
