"""`edgeloop demo`: the whole loop, offline on a CPU, on scenes the project generates itself.

A site starts with a model trained on data where `no_helmet` is rare; its camera sees more of it. The demo
registers the camera, trains and gates the first model, runs the edge agent on the camera's video against
the ingest API, then runs `improvement_cycle` (the production flow) with the oracle as annotators, and ends
with the cycle report. One line per stage; the trainer's chatter goes to a log file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edge.agent import Agent, AgentConfig
from edge.detectors.load import load_detector
from edge.sources import VideoFileSource
from edge.triggers import TriggerConfig
from edge.updater import ModelUpdater, UpdaterConfig
from feedback.datasets.yolo_import import import_yolo
from feedback.ingest.serving import BackgroundServer
from feedback.report.render import write_cycle_report
from feedback.scenes import CLASSES, write_video, write_yolo_dataset
from feedback.training.export import export_onnx
from feedback.training.gate_run import run_gate
from feedback.training.train import train
from flows.cycle import improvement_cycle
from store.captures import source_frames
from store.devices import add_device
from store.inbox import load_inbox
from store.settings import Settings, Workspace

_MARKER = ".edgeloop-demo"
DEVICE = "demo-cam-01"
RARE = "no_helmet"
# What the generators and the open-vocabulary teacher are told each class looks like: prompts read "a worker
# with a bare head" where the class name alone would give "no helmet".
CLASS_PHRASES = {"helmet": ["a worker wearing a hard hat"], "no_helmet": ["a worker with a bare head, no hard hat"],
                 "vest": ["a worker in a high-visibility vest"], "package": ["a cardboard package"]}
# The camera sees heads without hard hats far more often than the base data set did.
CAMERA_WEIGHTS = (0.30, 0.25, 0.25, 0.20)
HOLDOUT_WEIGHTS = (0.30, 0.25, 0.25, 0.20)


# Frames the new model runs after the swap before the demo stops the device: 5 s at the camera's 10 fps.
SHOWN_FRAMES = 50


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
    random_rate: float = 0.1  # the unbiased sample; uncertainty, flicker and rare_class add the hard cases
    review_share: float = 0.6  # the annotators' budget, as a share of what the camera uploaded
    synthetic: int = 60
    canary_pct: float = 100.0  # the demo has one device: it is the canary
    seed: int = 0


# A model trained for one epoch detects little, so the quick run leans on the random sample.
QUICK = DemoPlan(base_images=16, holdout_images=6, camera_frames=24, first_epochs=1, challenger_epochs=1, imgsz=128,
                 random_rate=0.5, synthetic=4)


def prepare_workspace(path: Path) -> Workspace:
    """Start from an empty workspace; refuse to wipe a folder the demo did not create."""
    if path.exists():
        if not (path / _MARKER).exists():
            raise DemoError(f"{path} exists and is not a demo workspace; pass --workspace with a new folder")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / _MARKER).write_text("created by `edgeloop demo`; it recreates this folder on every run\n")
    return Workspace(Settings(workspace=path, fsync=False, class_phrases=CLASS_PHRASES))


@contextlib.contextmanager
def settings_for_flows(**values: Any) -> Iterator[None]:
    """Settings the flows must see too, as EDGELOOP_* variables while the block runs.

    Each flow opens the workspace from its path alone (`Settings(workspace=...)`, which reads edgeloop.toml in
    the working directory and the environment), so a value given only to the demo's own Settings would not reach
    them. A variable the user set already wins, as it does everywhere else."""
    names = {f"EDGELOOP_{key.upper()}": json.dumps(value) for key, value in values.items()}
    added = [name for name in names if name not in os.environ]
    for name in added:
        os.environ[name] = names[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def chatter_to(log: Path, verbose: bool) -> Iterator[None]:
    """ultralytics and Prefect print a lot; unless `verbose`, all of it goes to `log`, not the terminal."""
    if verbose:
        yield
        return
    from ultralytics.utils import LOGGER

    # Left open until the process ends: Prefect logs from atexit hooks (its temporary API stopping), and a
    # closed file there would turn that line into a traceback.
    sink = log.open("a")
    # Console handlers only: a FileHandler closes its stream when logging is reconfigured (uvicorn does that),
    # which would close the sink under everyone's feet.
    handlers = [h for h in (*LOGGER.handlers, *logging.getLogger().handlers)
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    saved = [h.stream for h in handlers]
    for h in handlers:
        h.stream = sink
    # Prefect's loggers and our own (a warning that the demo's rollout is unsigned, say) write to the sink and stop
    # there: the console handlers Prefect adds once a flow starts would otherwise print them between the stages.
    loggers = [logging.getLogger(name) for name in ("prefect", "feedback", "edge", "store", "flows")]
    extra = logging.StreamHandler(sink)
    propagates = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(extra)
        logger.propagate = False
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for h, stream in zip(handlers, saved, strict=True):
            h.stream = stream
        for logger, propagate in zip(loggers, propagates, strict=True):
            logger.removeHandler(extra)
            logger.propagate = propagate


class StageLines:
    """One line per stage: a spinner while it runs, then what it did."""

    def __init__(self, console: Console, started: float) -> None:
        self.console, self.started = console, started
        # redirect_*=False: a live display otherwise swaps sys.stdout/sys.stderr for proxies that print to the
        # terminal, and every line chatter_to sent to demo.log (ultralytics' progress bars) came back on screen.
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, transient=True, redirect_stdout=False, redirect_stderr=False)

    def begin(self, text: str) -> None:
        if self.console.is_terminal:  # a spinner only where it can be erased again
            self.progress.start()
            self.progress.add_task(text, total=None)

    def end(self, label: str, text: str) -> None:
        if self.console.is_terminal:
            self.progress.stop()
            for task in list(self.progress.tasks):
                self.progress.remove_task(task.id)
        self.console.print(f"[bold cyan]{label:<20}[/] {text}  [dim]{time.perf_counter() - self.started:.0f} s[/]")


def _rare_boxes(labels: Path, frames: list[int]) -> int:
    rare = CLASSES.index(RARE)
    return sum(sum(1 for line in (labels / f"camera_{i:06d}.txt").read_text().splitlines()
                   if line.split()[:1] == [str(rare)]) for i in frames)


def run_demo(path: Path, plan: DemoPlan = DemoPlan(), console: Console | None = None,
             verbose: bool = False) -> dict[str, Any]:
    console = console or Console()
    ws = prepare_workspace(path)
    data = path / "generated"
    log = path / "demo.log"
    started = time.perf_counter()
    lines = StageLines(console, started)
    summary: dict[str, Any] = {"workspace": str(path)}
    console.rule("[bold]edgeloop demo")
    console.print(f"a site-safety camera; classes {', '.join(CLASSES)}; {RARE} is the rare event the first model "
                  f"misses. Chatter goes to {log}.")
    s = plan.seed

    with chatter_to(log, verbose):
        lines.begin("data: generating the base set and a real holdout")
        base = import_yolo(ws, write_yolo_dataset(data / "base", range(s, s + plan.base_images)), "train",
                           progress=False)
        held = import_yolo(ws, write_yolo_dataset(data / "holdout", range(s + 10_000, s + 10_000 + plan.holdout_images),
                                                  class_weights=HOLDOUT_WEIGHTS), "holdout", progress=False)
        lines.end("data", f"{base.images} training images ({base.boxes} boxes, {RARE} rare), "
                           f"{held.images} real holdout images")

        lines.begin("first model: training from scratch, then the gate")
        first = train(ws, parent=None, overrides={"epochs": plan.first_epochs, "imgsz": plan.imgsz})
        verdict = run_gate(ws, first.model_id, progress=False)
        first_ap = verdict.challenger_metrics["per_class"][RARE]["map50"]
        lines.end("first model", f"{first.model_id}: mAP@0.5:0.95 {verdict.challenger_metrics['map50_95']:.3f}, "
                                  f"{RARE} AP@0.5 {first_ap or 0:.3f}; champion")
        summary["first_model"] = {"id": first.model_id, "map50_95": verdict.challenger_metrics["map50_95"]}

        lines.begin("camera: the device runs the edge agent on its video")
        onnx = export_onnx(ws, first.model_id, path / "deploy")
        labels = _camera(data, plan)
        token = add_device(ws.catalog, ws.objects, DEVICE)
        with BackgroundServer(ws.settings) as url:
            detector = load_detector(onnx)
            watched = tuple(k for k, n in detector.names.items() if n == RARE)
            # The demo compresses weeks into seconds: no hourly upload budget.
            triggers = TriggerConfig(budget_per_hour=1e9, budget_burst=10_000, random_rate=plan.random_rate,
                                     watch_classes=watched)
            config = AgentConfig(server=url, token=token, device=DEVICE, camera="gate-1",
                                 spool_dir=path / "spool", triggers=triggers, heartbeat_interval_s=1.0)
            agent = Agent(config, detector, VideoFileSource(data / "camera.mp4"))
            status = agent.run()
            left = agent.close(drain_timeout_s=60)
        fired = ", ".join(f"{k} {v}" for k, v in status["triggers"]["fired"].items() if v)
        lines.end("camera", f"{status['frames']} frames at {status['fps']:.0f} fps; uploaded {status['spooled']} "
                             f"hard examples ({fired}); {left} left in the spool")
        summary["agent"] = {"frames": status["frames"], "spooled": status["spooled"], "left_in_spool": left}

        budget = max(1, int(status["spooled"] * plan.review_share))

        def on_stage(name: str, state: str, result: dict[str, Any]) -> None:
            if name == "report":  # the demo's last line names it
                return
            if state == "start":
                lines.begin(f"cycle: {name}")
            else:
                lines.end(f"cycle: {name}", _describe(name, result, labels, ws))

        with settings_for_flows(class_phrases=CLASS_PHRASES):
            cycle = improvement_cycle(str(path), budget=budget, reviewer="oracle", labels=str(labels),
                                      holdout_share=0.2, generator="swap", synthetic_count=plan.synthetic,
                                      canary_pct=plan.canary_pct, epochs=plan.challenger_epochs, imgsz=plan.imgsz,
                                      seed=s, on_stage=on_stage,
                                      watch_classes=[RARE])  # the site's alert class, as the device watches it
        stages = {st["name"]: st for st in cycle["stages"]}
        if stages.get("publish", {}).get("status") == "done":
            lines.begin("rollout: the device follows its deployment")
            swaps = _roll_out(ws, path, onnx, token, watched)
            summary["rollout"] = swaps
            # The cycle's report was written when publish had only started the rollout; the swap happened since.
            # Its heartbeats go into the catalog, and the report is written again to show the fleet as it is.
            load_inbox(ws.catalog, ws.inbox)
            write_cycle_report(ws, cycle, Path(cycle["report"]).parent)
            lines.end("rollout", _describe_swap(swaps))
    summary.update(ingested=stages["ingest"]["result"].get("captures_added", 0),
                   reviewed=stages["review pull"]["result"].get("verified", 0),
                   failures=stages["review pull"]["result"].get("failures", 0),
                   cycle=cycle["cycle"], report=cycle.get("report_html") or cycle["report"])
    retrain = stages["retrain"]["result"]
    if "trained" in retrain:
        summary["challenger"] = {"id": retrain["trained"]["model"], "parent": retrain["trained"]["parent"],
                                 "promoted": retrain["gate"]["promoted"],
                                 "map50_95": retrain["gate"]["challenger_metrics"]["map50_95"]}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    console.rule(f"done in {summary['seconds']:.0f} s")
    console.print(f"report: {summary['report']}")
    return summary


def _roll_out(ws: Workspace, path: Path, installed: Path, token: str, watched: tuple[int, ...]) -> list[dict[str, Any]]:
    """The device runs its camera again, following its deployment, until the new model has taken over.

    Paced like a live camera (looping), so the frame loop keeps going while the updater downloads, builds
    and checks the new model in the background; returns which model ran which frames.
    """
    import threading

    with BackgroundServer(ws.settings) as url:
        updater = ModelUpdater(UpdaterConfig(server=url, token=token, model_dir=path / "device-models", poll_s=0.5,
                                             probation_frames=10, latency_budget_ms=10_000), installed=installed)
        triggers = TriggerConfig(random_enabled=False, watch_classes=watched, budget_per_hour=60)
        config = AgentConfig(server=url, token=token, device=DEVICE, camera="gate-1", spool_dir=path / "spool",
                             triggers=triggers, heartbeat_interval_s=1.0, max_frames=600)
        agent = Agent(config, updater.initial_detector(),
                      VideoFileSource(path / "generated" / "camera.mp4", realtime=True, loop=True), updater)
        stop = threading.Event()

        def swapped(status: dict[str, Any]) -> None:
            runs = status["models_run"]
            # The new model is through probation and has run long enough (heartbeats every second) for the
            # canary judgment to have the heartbeats it needs.
            if len(runs) > 1 and runs[-1]["frames"] >= SHOWN_FRAMES:
                stop.set()

        status = agent.run(stop=stop, on_status=swapped)
        agent.close(drain_timeout_s=10)
    return status["models_run"]


def _describe_swap(runs: list[dict[str, Any]]) -> str:
    if len(runs) < 2:
        return f"no swap within {runs[-1]['frames'] if runs else 0} frames (see demo.log)"
    old, new = runs[-2], runs[-1]
    seamless = "no frame dropped or run twice" if new["first_frame"] == old["last_frame"] + 1 else "FRAMES LOST"
    return (f"swapped {old['model_version']} -> {new['model_version']} between frames {old['last_frame']} and "
            f"{new['first_frame']}: {seamless}")


def _camera(data: Path, plan: DemoPlan) -> Path:
    """The camera's video and, one file per frame, the simulated annotators' answers."""
    scenes = write_video(data / "camera.mp4", range(plan.seed + 20_000, plan.seed + 20_000 + plan.camera_frames),
                         fps=10, class_weights=CAMERA_WEIGHTS)
    labels = data / "camera_labels"
    labels.mkdir()
    for i, scene in enumerate(scenes):
        h, w = scene.image.shape[:2]
        rows = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for (x1, y1, x2, y2), c in zip(scene.boxes, scene.class_ids, strict=True)]
        (labels / f"camera_{i:06d}.txt").write_text("\n".join(rows) + "\n" if rows else "")
    return labels


def _describe(name: str, result: dict[str, Any], labels: Path, ws: Workspace) -> str:
    """One line on what a cycle stage did, in the demo's words."""
    if result.get("skipped"):
        return f"skipped: {result['skipped']}"
    if name == "ingest":
        return f"{result['captures_added']} captures and {result['heartbeats_added']} heartbeats into the catalog"
    if name == "review push":
        return f"active selection sent {result['pushed']} captures to the annotators"
    if name == "review pull":
        return f"{result['verified']} verified ({result['boxes']} boxes), {result['failures']} failures, " + \
            _rare_found(ws, labels)
    if name == "retrain":
        gate = result["gate"]
        before = (gate["champion_metrics"] or {}).get("map50_95") or 0.0
        after = gate["challenger_metrics"]["map50_95"]
        ap = gate["challenger_metrics"]["per_class"][RARE]["map50"] or 0.0
        was = ((gate["champion_metrics"] or {}).get("per_class", {}).get(RARE, {}).get("map50")) or 0.0
        word = "PROMOTED" if gate["promoted"] else "kept the champion"
        return f"{gate['challenger']}: mAP@0.5:0.95 {before:.3f} -> {after:.3f}, {RARE} AP@0.5 {was:.3f} -> {ap:.3f}: {word}"
    if name == "mine":
        return f"{result['clusters']} blind spots from {result['new_failures']} failures, {result['prompts']} prompts"
    if name == "synthesize":
        return f"{result['kept']} {result['generator']} images kept, {result['rejected']} rejected by the filters"
    if name == "publish":
        return f"{result['model']} published, rolling out to {result['canary_pct']:g}% of devices"
    return ", ".join(f"{k} {v}" for k, v in result.items() if isinstance(v, (int, float, str)))[:100]


def _rare_found(ws: Workspace, labels: Path) -> str:
    """Rare boxes the reviewed captures held, against what as many random captures would have held."""
    with ws.catalog.connect() as con:
        reviewed, every = source_frames(con, verified_only=True), source_frames(con)
    if not reviewed or not every:
        return f"no {RARE} to count"
    found = _rare_boxes(labels, reviewed)
    expected = _rare_boxes(labels, every) / len(every) * len(reviewed)
    return f"{found} {RARE} boxes (random would have found ~{np.round(expected):.0f})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `edgeloop demo`")
