"""Training for real (ultralytics, CPU, tiny) on generated scenes: weights and lineage are recorded.

What the trainer really started from (weights, images, labels) is read from inside ultralytics by
one of its own callbacks, run just before the first optimiser step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, write_yolo_dataset
from feedback.training.train import TrainingError, train
from flows.cli import app
from store.datasets import DatasetError, build_dataset
from store.models import get_model
from store.settings import Settings, Workspace

TINY = {"epochs": 1, "imgsz": 128, "batch": 8, "workers": 0}
VEST = CLASSES.index("vest")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("train")
    ws = Workspace(Settings(workspace=root / "ws"))
    import_yolo(ws, write_yolo_dataset(root / "t", range(24)), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(root / "h", range(500, 506)), "holdout", progress=False)
    return ws


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """One entry per training run in the test: the trainer's weights, data and labels before its first step."""
    from ultralytics.utils.callbacks import base

    seen: list[dict[str, Any]] = []

    def record(trainer: Any) -> None:
        seen.append({
            "weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "data": Path(trainer.args.data),
            "labels": {Path(x["im_file"]).stem: sorted(int(c) for c in x["cls"].ravel())
                       for x in trainer.train_loader.dataset.labels},
        })  # fmt: skip

    # Every YOLO() built from now on copies these defaults into its own callbacks.
    monkeypatch.setitem(base.default_callbacks, "on_train_start", [*base.default_callbacks["on_train_start"], record])
    yield seen


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    from ultralytics import YOLO

    return YOLO(str(path)).model.state_dict()


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Euclidean distance over all floating-point tensors (BN counters left out)."""
    assert a.keys() == b.keys()
    return float(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in a if a[k].is_floating_point()) ** 0.5)


def test_first_model_from_yaml_then_a_child_from_it(ws: Workspace, starts: list[dict[str, Any]]) -> None:
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

    child = train(ws, parent=first.model_id, overrides=TINY, seed=3)
    assert child.parent_id == first.model_id and child.weights_sha256 != first.weights_sha256

    # The catalog's lineage: both rows name the parent, the data, the weights; the params are the run's own.
    with ws.catalog.connect() as con:
        model = get_model(con, child.model_id)
        runs = con.execute("SELECT model_id, parent_id, dataset_version, params, weights_sha256 FROM training_runs "
                           "WHERE model_id = ?", [child.model_id]).fetchall()
    assert (model.parent_id, model.dataset_version, model.weights_sha256) == (first.model_id, 1, child.weights_sha256)
    assert model.id == f"m-{child.weights_sha256[:12]}" and model.classes == list(CLASSES)
    [(model_id, parent_id, version, params_json, sha)] = runs
    assert (model_id, parent_id, version, sha) == (child.model_id, first.model_id, 1, child.weights_sha256)
    blob = ws.blobs.get(child.weights_sha256)
    assert hashlib.sha256(blob).hexdigest() == child.weights_sha256
    [run_dir] = [p.parents[2] for p in (ws.settings.workspace / "runs").glob("*/train/weights/last.pt")
                 if p.read_bytes() == blob]
    used = yaml.safe_load((run_dir / "train" / "args.yaml").read_text())  # what ultralytics ran with
    params = json.loads(params_json)
    assert params["seed"] == 3 == used["seed"]
    assert {k: used[k] for k in params if k in used} == {k: v for k, v in params.items() if k in used}
    assert {"epochs", "imgsz", "batch", "lr0", "optimizer", "mosaic"} <= params.keys()

    # Before its first step the child held exactly the parent's weights, not a fresh initialisation
    # (the parent's own start: same yaml, classes and seed is what a from-scratch child would get).
    assert len(starts) == 2
    fresh, child_start = starts[0]["weights"], starts[1]["weights"]
    parent_path = ws.settings.workspace.parent / f"{first.model_id}.pt"
    parent_path.write_bytes(ws.blobs.get(first.weights_sha256))
    parent = weights_of(parent_path)
    assert [k for k in parent if not torch.equal(child_start[k], parent[k])] == []
    assert distance(child_start, fresh) > 1.0
    # By distance too: after its epoch the child is nearer its parent than the fresh start.
    after = weights_of(run_dir / "train" / "weights" / "last.pt")
    to_parent, to_fresh = distance(after, parent), distance(after, fresh)
    assert to_parent < to_fresh


def labels_by_sha(folder: Path) -> dict[str, list[int]]:
    """Classes per image as written in a YOLO folder's label files, keyed by the image's sha256."""
    out = {}
    for image in sorted((folder / "images").iterdir()):
        label = folder / "labels" / f"{image.stem}.txt"
        lines = label.read_text().split() if label.exists() else []
        out[hashlib.sha256(image.read_bytes()).hexdigest()] = sorted(int(c) for c in lines[0::5])
    return out


def test_dataset_option_trains_on_that_version_not_the_newest(tmp_path: Path, starts: list[dict[str, Any]]) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    scenes = write_yolo_dataset(tmp_path / "t", range(12))
    import_yolo(ws, write_yolo_dataset(tmp_path / "h", range(500, 503)), "holdout", progress=False)
    import_yolo(ws, scenes, "train", progress=False)
    v1_labels = labels_by_sha(scenes)
    assert build_dataset(ws.catalog).version == 1
    # Version 2: every vest relabelled as background, and four more images.
    for label in (scenes / "labels").glob("*.txt"):
        kept = [line for line in label.read_text().splitlines() if int(line.split()[0]) != VEST]
        label.write_text("".join(line + "\n" for line in kept))
    write_yolo_dataset(scenes, range(12, 16))
    import_yolo(ws, scenes, "train", progress=False)
    v2_labels = labels_by_sha(scenes)
    assert build_dataset(ws.catalog).version == 2
    assert any(VEST in classes for classes in v1_labels.values()) and v1_labels != v2_labels  # the premise

    # The plain recipe: the rare-aware one repeats no_helmet's images (tests/feedback/training/test_train_recipe.py).
    out = CliRunner().invoke(app, ["train", "--dataset", "1", "--scratch", "--epochs", "1", "--imgsz", "64",
                                   "--recipe", "plain", "-w", str(ws.settings.workspace), "--json"])
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["dataset_version"] == 1

    [start] = starts
    assert start["labels"] == v1_labels  # the images and the labels of v1, vests included
    assert yaml.safe_load(start["data"].read_text())["edgeloop_dataset_version"] == 1
    with ws.catalog.connect() as con:
        assert con.execute("SELECT max(version) FROM datasets").fetchone()[0] == 2  # no new version was frozen
        assert get_model(con, result["model"]).dataset_version == 1
        assert con.execute("SELECT dataset_version FROM training_runs WHERE model_id = ?",
                           [result["model"]]).fetchone()[0] == 1


@pytest.mark.parametrize("version", [0, 7])
def test_a_dataset_version_that_does_not_exist_is_refused(ws: Workspace, version: int) -> None:
    with ws.catalog.connect() as con:
        versions = con.execute("SELECT count(*) FROM datasets").fetchone()[0]
    with pytest.raises(DatasetError, match=f"v{version} does not exist"):
        train(ws, dataset_version=version, parent=None, overrides=TINY)
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM datasets").fetchone()[0] == versions  # none frozen instead


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
