"""The retrain flow's cache under a real (ephemeral) Prefect API: it must never outlive its workspace.

Prefect keeps task results outside the workspace; `edgeloop demo` recreates its workspace at the same
path on every run, and a second run used to get the first one's challenger back, a model its registry
had never seen.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from flows.common import workspace_identity
from flows.retrain import retrain_flow
from store.settings import Settings, Workspace

pytestmark = pytest.mark.usefixtures("prefect_api")


def make_site(path: Path, data: Path, scene_pt: Path) -> None:
    from feedback.training.gate_run import register_weights

    ws = Workspace(Settings(workspace=path, fsync=False))
    import_yolo(ws, data / "base", "train", progress=False)
    import_yolo(ws, data / "holdout", "holdout", progress=False)
    record, _ = register_weights(ws, scene_pt)
    with ws.catalog.connect() as con:
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [record.id])


def test_a_workspace_made_again_at_the_same_path_trains_again(tmp_path: Path, scene_pt: Path) -> None:
    data = tmp_path / "data"
    write_yolo_dataset(data / "base", range(8))
    write_yolo_dataset(data / "holdout", range(100, 104))
    path = tmp_path / "ws"
    make_site(path, data, scene_pt)
    first_id = workspace_identity(str(path))
    first = retrain_flow(str(path), epochs=1, imgsz=64)

    shutil.rmtree(path)
    make_site(path, data, scene_pt)
    assert workspace_identity(str(path)) != first_id
    second = retrain_flow(str(path), epochs=1, imgsz=64)  # the same parameters: the path alone would hit the cache
    with Workspace(Settings(workspace=path, fsync=False)).catalog.connect() as con:
        runs = con.execute("SELECT model_id FROM training_runs").fetchall()
    assert runs == [(second["trained"]["model"],)]  # trained here, not taken from the deleted workspace
    assert second["gate"]["challenger"] == second["trained"]["model"]
    assert first["dataset_version"] == second["dataset_version"]
