"""Training a challenger with ultralytics on a frozen dataset version, recorded in the registry.

Fine-tunes from the champion when there is one, else starts from a model yaml (random weights). Where a class is
rare or watched, the rare-aware recipe (feedback.training.recipe) applies and the model gets per-class thresholds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.protocol import utc_now
from feedback.training.copy_paste import paste_rare
from feedback.training.recipe import (
    Recipe, carve_calibration, choose_imgsz, draw_repeats, for_data, rare_box_sides, rare_fitness, rare_in,
    repeat_factors,
)
from store.datasets import YoloItem, build_dataset, materialise, yolo_items
from store.labels import catalog_classes
from store.models import ModelRecord, champion, get_model, record_training_run, register_model
from store.settings import Workspace

# Augmentation the field uses for small detection data sets (ultralytics' names). Note that
# ultralytics applies copy-paste only where labels carry segments; on boxes alone it is a no-op.
# Mosaic and mixup stop for the last `close_mosaic` epochs (10 by default), so short fine-tunes (the cpu
# profile, bench/loop.py's 10 epochs) train without them. Kept so: turning them on for 8 of bench/loop.py's
# 10 epochs lowered val mAP50 from 0.387 to 0.369 (base arm) and from 0.437 to 0.395 (random arm, seed 0).
SMALL_DATA = {
    "mosaic": 1.0, "perspective": 0.0005, "translate": 0.1, "scale": 0.5, "degrees": 0.0,
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "fliplr": 0.5, "mixup": 0.2, "copy_paste": 0.3,
    "cos_lr": True, "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 1.0,
}

PROFILES: dict[str, dict[str, Any]] = {
    # Minutes on a laptop CPU: small images, few epochs; the demo and tests use it.
    "cpu": {"imgsz": 256, "epochs": 5, "batch": 16, "device": "cpu", "amp": False, "workers": 2},
    # A real GPU run: full resolution, long schedule, early stopping, images cached in RAM.
    "gpu": {"imgsz": 640, "epochs": 150, "batch": -1, "device": 0, "amp": True, "workers": 8, "cache": "ram",
            "patience": 30},
}
# The largest training size the recipe may choose for small rare objects, per profile: each doubling of the
# side quadruples training and edge inference time (bench/edge.py measures the fps at a size).
MAX_IMGSZ = {"cpu": 640, "gpu": 1280}
# Fewer rare boxes than this in the calibration split and a threshold chosen on them is noise: no split then.
MIN_CALIBRATION_BOXES = 8


class TrainingError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainResult:
    model_id: str
    weights_sha256: str
    parent_id: str | None
    dataset_version: int
    duration_s: float
    params: dict[str, Any]
    job: str | None = None  # where a training backend ran it remotely (a Vertex AI job's resource name)
    thresholds: dict[str, float] | None = None  # class name -> operating confidence, where the recipe chose them


@dataclass(frozen=True)
class RunPlan:
    """What a run trains on and from, decided before any work, whichever backend then trains."""

    dataset_version: int
    classes: list[str]
    parent: ModelRecord | None  # None: from `base`
    base: str
    profile: str
    params: dict[str, Any]  # ultralytics' arguments, the seed among them
    recipe: Recipe = field(default_factory=Recipe.off)  # as it applies to this data (levers off: no rare class)
    notes: dict[str, Any] = field(default_factory=dict)  # what the recipe decided and measured, for the lineage

    @property
    def recorded(self) -> dict[str, Any]:
        # `base` is where a run from scratch starts; a fine-tune starts from its parent, named beside.
        recipe = {"recipe": {**self.recipe.recorded(), **self.notes}} if self.recipe.active else {}
        return {**self.params, **({} if self.parent else {"base": self.base}), **recipe}


@dataclass(frozen=True)
class TrainRequest:
    """What a run is asked to train, stated once: `train` here and every training backend take it, so an option
    is added in one place and means the same wherever the run happens."""

    dataset_version: int | None = None  # None: freeze the labels into a new version
    parent: str | None = "champion"  # a model id, "champion" (if any), or None to start from `base`
    base: str = "yolov8n.yaml"
    profile: str | None = None  # None: the backend's default (cpu here, gpu for a Vertex job with an accelerator)
    overrides: dict[str, Any] | None = None  # ultralytics arguments that win over the profile's and the recipe's
    seed: int = 0
    recipe: Recipe | None = None  # None: every lever on, at the workspace's operating precision
    watch: Sequence[str] = ()  # classes the recipe treats as rare; empty: the workspace's watch_classes


def plan_run(ws: Workspace, request: TrainRequest) -> RunPlan:
    """The request made concrete before any work: its dataset version (frozen now if none), parent and params.

    The `recipe` (default: every lever on) applies where the training data has a rare class (fewer verified boxes
    than a tenth of the commonest's, as selection counts them) or a `watch`ed one (default: the workspace's
    watch_classes); explicit `overrides` win."""
    profile = request.profile or "cpu"
    dataset_version, parent, seed, recipe = request.dataset_version, request.parent, request.seed, request.recipe
    if profile not in PROFILES:
        raise TrainingError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    version = build_dataset(ws.catalog).version if dataset_version is None else dataset_version
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
        start_model = champion(con) if parent == "champion" else (get_model(con, parent) if parent else None)
    if parent not in (None, "champion") and start_model is None:
        raise TrainingError(f"no model {parent!r} in the registry (see `edgeloop models`)")
    watch = list(request.watch or ws.settings.watch_classes)
    if unknown := [w for w in watch if w not in classes]:
        raise TrainingError(f"watched class(es) {unknown} are not the catalog's {classes}")
    # The seed is one of the run's parameters: recorded with them, so the lineage says how to repeat it.
    params = {**SMALL_DATA, **PROFILES[profile], "seed": seed}
    train_items = [i for i in yolo_items(ws.catalog, version)[1] if i.split == "train"]
    recipe = Recipe(operating_precision=ws.settings.operating_precision) if recipe is None else recipe
    recipe = for_data(recipe,
                      rare_in(train_items, len(classes), [classes.index(w) for w in watch]))
    notes: dict[str, Any] = {}
    if recipe.active:
        notes["rare_class_names"] = [classes[c] for c in recipe.rare_classes]
        if recipe.min_rare_px is not None:
            sides = rare_box_sides([i for i in train_items if i.origin == "real"], recipe.rare_classes)
            size = choose_imgsz(sides, recipe.min_rare_px, int(params["imgsz"]), MAX_IMGSZ[profile])
            median = float(np.median(sides)) if len(sides) else None
            notes["resolution"] = {"rare_median_side_share": None if median is None else round(median, 4),
                                   "imgsz": size, "bounds": [int(params["imgsz"]), MAX_IMGSZ[profile]]}
            params["imgsz"] = size
        if recipe.class_weight_power > 0:
            params["cls_pw"] = recipe.class_weight_power
    params.update(request.overrides or {})
    return RunPlan(version, classes, start_model, request.base, profile, params, recipe, notes)


def fit(data_yaml: Path, start: Path | str, params: dict[str, Any], run_dir: Path,
        progress: Callable[[int, int], None] | None = None, *, rare: Sequence[int] | None = None) -> Path:
    """ultralytics training of `start` (weights or a model yaml) on a YOLO folder; the chosen weights' path.

    `rare` given: data_yaml's val is the calibration split, validated after every epoch, and the epoch best on
    the rare-aware fitness is kept (RareCheckpoint). Otherwise the last epoch's weights."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no telemetry, no update checks
    from ultralytics import YOLO  # heavy (torch): imported only when training

    model = YOLO(str(start))
    epochs = int(params["epochs"])
    if progress:
        model.add_callback("on_train_epoch_end", lambda trainer: progress(trainer.epoch + 1, epochs))
    chooser = RareCheckpoint(run_dir / "rare_best.pt", rare) if rare is not None else None
    if chooser:
        model.add_callback("on_model_save", chooser)
    # Without a calibration split, val=False: the holdout is the gate's, not a tool for picking epochs;
    # ultralytics still validates once after the last epoch, which we ignore in favour of the gate.
    model.train(data=str(data_yaml), project=str(run_dir), name="train", exist_ok=True,
                deterministic=True, plots=False, val=chooser is not None, verbose=False, **params)
    weights = run_dir / "train" / "weights" / "last.pt"
    if not weights.is_file():
        raise TrainingError(f"ultralytics finished without writing {weights}")
    if chooser is None or not chooser.path.is_file():
        return weights
    summary = chooser.summary()
    (run_dir / "checkpoint.json").write_text(json.dumps(summary))
    if summary["chosen_epoch"] == summary["epochs"][-1]["epoch"]:
        return weights  # the last epoch won: ultralytics' own last.pt is those weights
    from ultralytics.utils.torch_utils import strip_optimizer

    strip_optimizer(chooser.path)  # as ultralytics strips its own last.pt: weights only, in half precision
    return chooser.path


class RareCheckpoint:
    """An ultralytics `on_model_save` callback: after each epoch's validation on the calibration split, keeps a
    copy of the epoch's weights when its rare-aware fitness (recipe.rare_fitness) is the best so far."""

    def __init__(self, path: Path, rare: Sequence[int]) -> None:
        self.path, self.rare = path, list(rare)
        self.history: list[dict[str, float]] = []
        self.best: float | None = None

    def __call__(self, trainer: Any) -> None:
        box = trainer.validator.metrics.box
        ap50 = dict(zip((int(c) for c in box.ap_class_index), (float(v) for v in box.ap50), strict=True))
        fitness = rare_fitness(float(box.map), [ap50[c] for c in self.rare if c in ap50])
        self.history.append({"epoch": int(trainer.epoch) + 1, "fitness": round(fitness, 5),
                             "map50_95": round(float(box.map), 5),
                             "rare_ap50": round(float(np.mean([ap50[c] for c in self.rare if c in ap50] or [0])), 5)})
        if self.best is None or fitness >= self.best:  # a tie goes to the later, longer-trained epoch
            self.best = fitness
            shutil.copyfile(trainer.last, self.path)

    def summary(self) -> dict[str, Any]:
        best = max((h["fitness"] for h in self.history), default=None)
        chosen = [h for h in self.history if h["fitness"] == best][-1] if self.history else None
        return {"chosen_epoch": chosen["epoch"] if chosen else None, "epochs": self.history}


def record_run(ws: Workspace, plan: RunPlan, weights_sha256: str, *, imgsz: int, started: datetime,
               duration_s: float, origin: str = "trained", note: str | None = None,
               thresholds: dict[str, float] | None = None) -> str:
    """The model and its training run in one transaction: a run is in the registry whole or not at all."""
    parent_id = plan.parent.id if plan.parent else None
    with ws.catalog.connect() as con:
        con.begin()
        model_id = register_model(con, weights_sha256, classes=plan.classes, imgsz=imgsz, parent_id=parent_id,
                                  dataset_version=plan.dataset_version, origin=origin, note=note,
                                  thresholds=thresholds)
        record_training_run(con, model_id=model_id, parent_id=parent_id, dataset_version=plan.dataset_version,
                            profile=plan.profile, params=plan.recorded, started_at=started, duration_s=duration_s,
                            weights_sha256=weights_sha256)
        con.commit()
    return model_id


def train(ws: Workspace, *, progress: Callable[[int, int], None] | None = None, **request: Any) -> TrainResult:
    """Train one model here; the keywords are a `TrainRequest`'s (an unknown one is a TypeError, as ever)."""
    return run_training(ws, TrainRequest(**request), progress)


def run_training(ws: Workspace, request: TrainRequest,
                 progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train one model here, on this machine's CPU or GPU; `progress` hears (epochs done, epochs in all)."""
    plan = plan_run(ws, request)
    version = plan.dataset_version
    # Absolute: ultralytics puts a relative `project` under its own runs_dir setting, not under
    # the working directory, and the weights would not be where we look for them.
    run_dir = (ws.settings.workspace / "runs" / f"{utc_now():%Y%m%d-%H%M%S}-v{version}").absolute()
    data_yaml, calibration = _training_data(ws, plan, request.seed)
    if plan.parent is not None:
        start = run_dir / "parent.pt"
        start.parent.mkdir(parents=True, exist_ok=True)
        start.write_bytes(ws.blobs.get(plan.parent.weights_sha256))
    else:
        start = Path(plan.base)

    started, t0 = utc_now(), time.perf_counter()
    rare = plan.recipe.rare_classes if plan.recipe.rare_checkpoint and calibration else None
    weights = fit(data_yaml, start, plan.params, run_dir, progress, rare=rare)
    if (run_dir / "checkpoint.json").is_file():
        plan.notes["checkpoint"] = json.loads((run_dir / "checkpoint.json").read_text())
    thresholds = _choose_thresholds(weights, data_yaml.parent / "calib", plan) if calibration else None
    duration = time.perf_counter() - t0
    sha = ws.blobs.put_file(weights)
    model_id = record_run(ws, plan, sha, imgsz=int(plan.params["imgsz"]), started=started, duration_s=duration,
                          thresholds=thresholds)
    return TrainResult(model_id, sha, plan.parent.id if plan.parent else None, version, duration, plan.params,
                       thresholds=thresholds)


def _training_data(ws: Workspace, plan: RunPlan, seed: int) -> tuple[Path, set[str]]:
    """The dataset version as a YOLO folder this run trains on: as frozen, or with the recipe's repeats and
    calibration split (then in a folder of its own, and its yaml's val is the calibration split)."""
    version, recipe = plan.dataset_version, plan.recipe
    if not recipe.active:
        return materialise(ws.catalog, ws.blobs, version, ws.settings.workspace / "datasets" / f"v{version}"), set()
    items = yolo_items(ws.catalog, version)[1]
    calibration = carve_calibration(items, recipe.rare_classes, recipe.calibration_share, seed)
    rare_boxes = sum(c in recipe.rare_classes for i in items if i.image_sha256 in calibration for c in i.class_ids)
    if rare_boxes < MIN_CALIBRATION_BOXES:  # too few to choose a rare threshold on: train on everything instead
        plan.notes["calibration"] = {"skipped": f"{rare_boxes} rare boxes would be carved; "
                                                f"{MIN_CALIBRATION_BOXES} are needed to choose a threshold on"}
        calibration = set()
    else:
        plan.notes["calibration"] = {"images": len(calibration), "rare_boxes": rare_boxes}
    training = [i for i in items if i.split == "train" and i.image_sha256 not in calibration]
    repeats = (draw_repeats(repeat_factors(training, recipe.repeat_threshold), seed)
               if recipe.repeat_threshold is not None else {})
    plan.notes["repeats"] = {"images_repeated": sum(r > 1 for r in repeats.values()),
                             "copies_added": sum(r - 1 for r in repeats.values()), "training_images": len(training)}
    key = hashlib.sha256(json.dumps([sorted(calibration), sorted(repeats.items()), recipe.copy_paste,
                                     seed]).encode()).hexdigest()[:10]
    data_yaml = materialise(ws.catalog, ws.blobs, version, ws.settings.workspace / "datasets" / f"v{version}-{key}",
                            repeats=repeats, calibration=calibration)
    if recipe.copy_paste > 0:
        _paste_rare(ws, data_yaml.parent / "train", training, plan, seed)
    if calibration:  # ultralytics validates on "val": for this run, that is the calibration split
        data = json.loads(data_yaml.read_text())
        data_yaml = data_yaml.with_name("train.yaml")
        data_yaml.write_text(json.dumps({**data, "val": data["calib"]}, indent=1) + "\n")
    return data_yaml, calibration


def _paste_rare(ws: Workspace, folder: Path, training: list[YoloItem], plan: RunPlan, seed: int) -> None:
    """Box-level copy-paste: rare crops from this run's training frames pasted into others, written beside them."""
    recipe = plan.recipe
    per_class = round(recipe.copy_paste * sum(bool(set(i.class_ids) & set(recipe.rare_classes)) for i in training))
    made = 0
    for k, pasted in enumerate(paste_rare(training, ws.blobs, recipe.rare_classes, per_class, seed)):
        (folder / "images" / f"paste_{k:05d}.jpg").write_bytes(pasted.image_jpeg)
        (folder / "labels" / f"paste_{k:05d}.txt").write_text(pasted.label)
        made += 1
    plan.notes["copy_paste"] = {"asked_per_rare_class": per_class, "images": made}


def _choose_thresholds(weights: Path, calib: Path, plan: RunPlan) -> dict[str, float] | None:
    """Each class's confidence for the recipe's target precision, on the calibration split (never the holdout,
    where the gate reports recall at them); the choice and its calibration numbers go to the lineage."""
    from feedback.evaluation.dataset import load_dataset
    from feedback.evaluation.predict import load_detector, predict_images
    from feedback.evaluation.thresholds import choose_thresholds

    dataset = load_dataset(calib, plan.classes)
    predictions, _ = predict_images(load_detector(weights), [image.path for image in dataset.images],
                                    progress=False)
    chosen = choose_thresholds({image.image_id: image.truth for image in dataset.images}, predictions,
                               plan.classes, plan.recipe.operating_precision,
                               alert_classes=[plan.classes[c] for c in plan.recipe.rare_classes])
    plan.notes["thresholds"] = {name: point.as_json() for name, point in chosen.items()}
    return {name: point.threshold for name, point in chosen.items()} or None
