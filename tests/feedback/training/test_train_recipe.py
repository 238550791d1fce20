"""The rare-aware recipe in a real (tiny, CPU) ultralytics run: what the trainer saw is read from inside it.

The images it trained on and the size it trained at come from ultralytics' own dataset and arguments, not from
anything our code wrote about itself; the calibration split and the holdout must be absent from them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, write_yolo_dataset
from feedback.training.recipe import Recipe
from feedback.training.train import TrainingError, train
from store.datasets import yolo_items
from store.models import get_model
from store.settings import Settings, Workspace

NO_HELMET = CLASSES.index("no_helmet")
# no_helmet 6% of objects against helmet's 70%: rare as selection counts it (under a tenth of the commonest).
WEIGHTS = (0.70, 0.06, 0.12, 0.12)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("recipe")
    ws = Workspace(Settings(workspace=root / "ws"))
    import_yolo(ws, write_yolo_dataset(root / "t", range(120), class_weights=WEIGHTS), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(root / "h", range(500, 510)), "holdout", progress=False)
    return ws


def seen_by_trainer(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from ultralytics.utils.callbacks import base

    seen: list[dict[str, Any]] = []

    def record(trainer: Any) -> None:
        seen.append({"stems": [Path(x["im_file"]).stem for x in trainer.train_loader.dataset.labels],
                     "imgsz": trainer.args.imgsz, "val": trainer.data["val"], "args": trainer.args})

    monkeypatch.setitem(base.default_callbacks, "on_train_start", [*base.default_callbacks["on_train_start"], record])
    return seen


def test_rare_images_repeat_calibration_stays_out_and_the_size_fits_the_rare_boxes(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = seen_by_trainer(monkeypatch)
    result = train(ws, parent=None, overrides={"epochs": 2, "batch": 8, "workers": 0},
                   recipe=Recipe(calibration_share=0.4), seed=0)
    [start] = seen
    with ws.catalog.connect() as con:
        params = json.loads(con.execute("SELECT params FROM training_runs WHERE model_id = ?",
                                        [result.model_id]).fetchone()[0])
        record = get_model(con, result.model_id)
    recipe = params["recipe"]
    items = {i.image_sha256: i for i in yolo_items(ws.catalog, result.dataset_version)[1]}
    times = Counter(stem.split("_r")[0] for stem in start["stems"])  # copies are named <sha>_r<k>

    # Nothing of the holdout, nothing of the calibration split; the calibration split holds rare boxes.
    holdout = {sha for sha, i in items.items() if i.split == "val"}
    assert not holdout & set(times)
    calibration = {sha for sha, i in items.items() if i.split == "train"} - set(times)
    assert len(calibration) == recipe["calibration"]["images"] and abs(len(calibration) - 0.4 * 120) <= 1
    assert sum(items[s].class_ids.count(NO_HELMET) for s in calibration) == recipe["calibration"]["rare_boxes"] >= 8
    assert Path(start["val"]).name == "images" and Path(start["val"]).parent.name == "calib"

    # Repeat factors by hand (LVIS, t = 1): class c's factor sqrt(1 / f(c)), f(c) its share of the images trained
    # on; each image appears floor(r) or floor(r) + 1 times, r its classes' largest factor.
    trained = [items[s] for s in times]
    holding = Counter(c for i in trained for c in set(i.class_ids))
    factor = {c: max(1.0, math.sqrt(1.0 / (n / len(trained)))) for c, n in holding.items()}
    for sha, n in times.items():
        r = max((factor[c] for c in set(items[sha].class_ids)), default=1.0)
        assert n in (math.floor(r), math.floor(r) + 1), (sha, n, r)
    rare_images = [s for s in times if NO_HELMET in items[s].class_ids]
    assert rare_images and all(times[s] >= 2 for s in rare_images)  # f(no_helmet) < 1/4, so r > 2

    # The size: heads are 22-46 px in 320x240 scenes; the median at 32 px a side needs about 320-448.
    assert start["imgsz"] == recipe["resolution"]["imgsz"] == record.imgsz
    assert 288 <= start["imgsz"] <= 448 and start["imgsz"] % 32 == 0
    # Checkpoint choice read the calibration split after every epoch.
    assert [e["epoch"] for e in recipe["checkpoint"]["epochs"]] == [1, 2]
    assert record.thresholds == result.thresholds


def test_the_plain_recipe_trains_on_every_image_once(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = seen_by_trainer(monkeypatch)
    result = train(ws, parent=None, overrides={"epochs": 1, "imgsz": 128, "batch": 8, "workers": 0},
                   recipe=Recipe.off())
    train_items = [i for i in yolo_items(ws.catalog, result.dataset_version)[1] if i.split == "train"]
    assert sorted(seen[0]["stems"]) == sorted(i.image_sha256 for i in train_items)
    with ws.catalog.connect() as con:
        assert get_model(con, result.model_id).thresholds is None
        params = json.loads(con.execute("SELECT params FROM training_runs WHERE model_id = ?",
                                        [result.model_id]).fetchone()[0])
    assert "recipe" not in params


def test_a_watched_class_turns_the_recipe_on_and_an_unknown_one_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    # Evenly mixed classes: nothing is rare, so only watching vest makes the recipe apply.
    import_yolo(ws, write_yolo_dataset(tmp_path / "t", range(16), class_weights=(1, 1, 1, 1)), "train",
                progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "h", range(500, 503)), "holdout", progress=False)
    tiny = {"epochs": 1, "imgsz": 96, "batch": 8, "workers": 0}
    with pytest.raises(TrainingError, match="'hardhat'"):
        train(ws, parent=None, overrides=tiny, watch=["hardhat"])
    plain = train(ws, parent=None, overrides=tiny, seed=1)
    watched = train(ws, parent=None, overrides=tiny, watch=["vest"], seed=2)
    with ws.catalog.connect() as con:
        runs = dict(con.execute("SELECT model_id, params->'recipe' FROM training_runs").fetchall())
    assert runs[plain.model_id] is None
    assert json.loads(runs[watched.model_id])["rare_class_names"] == ["vest"]


def test_copy_paste_adds_pasted_rare_images_to_what_the_trainer_reads(ws: Workspace,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen = seen_by_trainer(monkeypatch)
    result = train(ws, parent=None, overrides={"epochs": 1, "imgsz": 128, "batch": 8, "workers": 0},
                   recipe=Recipe(calibration_share=0.0, repeat_threshold=None, copy_paste=0.5), seed=0)
    with ws.catalog.connect() as con:
        recipe = json.loads(con.execute("SELECT params FROM training_runs WHERE model_id = ?",
                                        [result.model_id]).fetchone()[0])["recipe"]
    pasted = [s for s in seen[0]["stems"] if s.startswith("paste_")]
    assert len(pasted) == recipe["copy_paste"]["images"] > 0
    assert recipe["copy_paste"]["images"] <= recipe["copy_paste"]["asked_per_rare_class"]
