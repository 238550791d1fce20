"""`edgeloop demo`: the whole loop, offline on a CPU, on scenes the project generates itself.

A site starts with a model trained on data where `no_helmet` is rare; its camera sees more of it.
The demo registers the camera, trains and gates the first model, runs the edge agent on the
camera's video against the ingest API, loads and reviews (oracle) what it uploaded, retrains
from the champion on real + reviewed data, and lets the gate judge the challenger on real images.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.agent import Agent, AgentConfig
from edge.detectors.base import load_detector
from edge.sources import VideoFileSource
from edge.triggers import TriggerConfig
from feedback.datasets.yolo_import import import_yolo
from feedback.evaluation.evaluate import format_table
from feedback.ingest.serving import BackgroundServer
from feedback.review.boxes import prepare_vectors
from feedback.review.failures import failure_summary, format_failures
from feedback.review.oracle import OracleReviewer
from feedback.review.selection import SelectionConfig
from feedback.review.workflow import pull_reviews, push_for_review
from feedback.scenes import CLASSES, write_video, write_yolo_dataset
from feedback.training.export import export_onnx
from feedback.training.promote import run_gate
from feedback.training.train import train
from store.devices import add_device
from store.inbox import load_inbox
from store.settings import Settings, Workspace

_MARKER = ".edgeloop-demo"
DEVICE = "demo-cam-01"
# The camera sees heads without hard hats far more often than the base data set did.
CAMERA_WEIGHTS = (0.30, 0.25, 0.25, 0.20)
HOLDOUT_WEIGHTS = (0.30, 0.25, 0.25, 0.20)


class DemoError(Exception):
    pass


@dataclass(frozen=True)
class DemoPlan:
    """How big each stage is; the default runs in minutes on two CPU cores."""

    base_images: int = 200
    holdout_images: int = 120  # enough no_helmet for its AP to mean something
    camera_frames: int = 240
    first_epochs: int = 12
    challenger_epochs: int = 6
    imgsz: int = 224
    random_rate: float = 0.1  # the unbiased sample; uncertainty and flicker add the hard cases
    review_share: float = 0.6  # the annotators' budget, as a share of what the camera uploaded
    seed: int = 0


# A model trained for one epoch detects little, so the quick run leans on the random sample.
QUICK = DemoPlan(base_images=16, holdout_images=6, camera_frames=24, first_epochs=1, challenger_epochs=1, imgsz=128,
                 random_rate=0.5)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"  # None: nothing to divide by (no boxes, no predictions)


def prepare_workspace(path: Path) -> Workspace:
    """Start from an empty workspace; refuse to wipe a folder the demo did not create."""
    if path.exists():
        if not (path / _MARKER).exists():
            raise DemoError(f"{path} exists and is not a demo workspace; pass --workspace with a new folder")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / _MARKER).write_text("created by `edgeloop demo`; it recreates this folder on every run\n")
    return Workspace(Settings(workspace=path))


def run_demo(path: Path, plan: DemoPlan = DemoPlan(), console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    ws = prepare_workspace(path)
    data = path / "generated"
    summary: dict[str, Any] = {"workspace": str(path)}
    started = time.perf_counter()
    console.rule("[bold]edgeloop demo")
    console.print(f"workspace {path.resolve()}; classes {', '.join(CLASSES)}; no_helmet is the rare event")

    def stage(n: int, text: str) -> None:
        console.print(f"\n[bold cyan]{n}. {text}[/]  [dim]({time.perf_counter() - started:.0f} s)[/]")

    stage(1, "data: generate the base set (no_helmet rare) and a real holdout, import both")
    s = plan.seed
    base = import_yolo(ws, write_yolo_dataset(data / "base", range(s, s + plan.base_images)), "train", progress=False)
    held = import_yolo(ws, write_yolo_dataset(data / "holdout", range(s + 10_000, s + 10_000 + plan.holdout_images),
                                              class_weights=HOLDOUT_WEIGHTS), "holdout", progress=False)
    console.print(f"imported {base.images} training images ({base.boxes} boxes) and {held.images} holdout images")

    stage(2, "train the first model from scratch and gate it")
    first = train(ws, parent=None, overrides={"epochs": plan.first_epochs, "imgsz": plan.imgsz})
    verdict = run_gate(ws, first.model_id, progress=False)
    console.print(f"{first.model_id} trained in {first.duration_s:.0f} s; gate: {'; '.join(verdict.decision.reasons)}")
    console.print(format_table(verdict.challenger_metrics))
    summary["first_model"] = {"id": first.model_id, "map50_95": verdict.challenger_metrics["map50_95"]}

    stage(3, "deploy: export ONNX; the camera's device runs the edge agent against the ingest API")
    onnx = export_onnx(ws, first.model_id, path / "deploy")
    video = data / "camera.mp4"
    scenes = write_video(video, range(s + 20_000, s + 20_000 + plan.camera_frames), fps=10,
                         class_weights=CAMERA_WEIGHTS)
    labels = data / "camera_labels"  # the simulated annotators' answers, one file per frame
    labels.mkdir()
    for i, scene in enumerate(scenes):
        h, w = scene.image.shape[:2]
        rows = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for (x1, y1, x2, y2), c in zip(scene.boxes, scene.class_ids, strict=True)]
        (labels / f"camera_{i:06d}.txt").write_text("\n".join(rows) + "\n" if rows else "")
    token = add_device(ws.catalog, ws.objects, DEVICE)
    with BackgroundServer(ws.settings) as url:
        # The demo compresses weeks into seconds: no hourly upload budget.
        triggers = TriggerConfig(budget_per_hour=1e9, budget_burst=10_000, random_rate=plan.random_rate)
        config = AgentConfig(server=url, token=token, device=DEVICE, camera="gate-1", spool_dir=path / "spool",
                             triggers=triggers,
                             heartbeat_interval_s=1.0)
        agent = Agent(config, load_detector(onnx), VideoFileSource(video))
        status = agent.run()
        left = agent.close(drain_timeout_s=60)
    console.print(f"agent: {status['frames']} frames at {status['fps']:.0f} fps (inference p50 "
                  f"{status['inference_ms_p50']:.0f} ms); hard examples by trigger {status['triggers']['fired']}; "
                  f"{status['spooled']} spooled, {left} left in the spool")
    summary["agent"] = {"frames": status["frames"], "spooled": status["spooled"], "left_in_spool": left}

    stage(4, "ingest the inbox; pick the captures most worth a person's time; review them (oracle)")
    loaded = load_inbox(ws.catalog, ws.inbox)
    # The champion's own features: frames for diversity, boxes for the rare-class probe.
    embedder = prepare_vectors(ws, progress=False)
    budget = max(1, int(loaded.captures_added * plan.review_share))
    reviewer = OracleReviewer(labels)
    pushed = push_for_review(ws, budget, reviewer=reviewer, selection=SelectionConfig(embedder=embedder))
    pulled = pull_reviews(ws, reviewer=reviewer)
    console.print(f"loaded {loaded.captures_added} captures and {loaded.heartbeats_added} heartbeats; "
                  f"active selection sent {pushed.pushed} of them to review; {pulled.verified} verified "
                  f"({pulled.boxes} boxes), {pulled.holdout} joined the real holdout")
    console.print(format_failures(failure_summary(ws.catalog)))
    summary.update(ingested=loaded.captures_added, reviewed=pulled.verified, failures=pulled.failures)

    stage(5, "retrain: fine-tune a challenger from the champion on real + reviewed data, and gate it")
    challenger = train(ws, overrides={"epochs": plan.challenger_epochs, "imgsz": plan.imgsz})
    verdict = run_gate(ws, challenger.model_id, progress=False)
    table = Table("", "champion", "challenger", title=f"gate on dataset v{verdict.dataset_version}'s real holdout")
    both = (verdict.champion_metrics or {}, verdict.challenger_metrics)
    for key in ("map50", "map50_95", "precision", "recall"):
        table.add_row(key, *(_number(m.get(key)) for m in both))
    for name in CLASSES:
        table.add_row(f"{name} AP@0.5", *(_number(m.get("per_class", {}).get(name, {}).get("map50")) for m in both))
    console.print(table)
    word = "[green]PROMOTED[/]" if verdict.decision.promoted else "[yellow]KEPT THE CHAMPION[/]"
    console.print(f"{word}: {'; '.join(verdict.decision.reasons)}")
    summary["challenger"] = {"id": challenger.model_id, "parent": challenger.parent_id,
                             "promoted": verdict.decision.promoted,
                             "map50_95": verdict.challenger_metrics["map50_95"]}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    console.rule(f"done in {summary['seconds']:.0f} s; `edgeloop models -w {path}` shows the registry")
    return summary
