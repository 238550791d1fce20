"""`edgeloop cycle` (the improvement cycle once, in-process) and `edgeloop deploy` (its schedules, served)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from feedback.review.stage import Selection
from flows.cli.common import (
    EpochsOpt, ImgszOpt, JsonOpt, WorkspaceOpt, app, console, emit, err, fail, open_workspace, ultralytics_to_stderr,
)


SelectionOpt = Annotated[str, typer.Option(
    help="Review push's other switches, KEY=VALUE[,...]: uncertainty, diversity, class_balance, rare, evidence, "
         "failure, per_second (true/false), watch_classes (a+b), seed; as `edgeloop review push` sets them.")]


def selection_of(strategy: str, text: str) -> Selection:
    try:
        return Selection.parse(text, strategy=strategy)
    except ValueError as exc:
        raise fail(str(exc)) from exc


@app.command()
def cycle(
    budget: Annotated[int, typer.Option(help="Captures people review this cycle.")] = 100,
    strategy: Annotated[str, typer.Option(help="active or random.")] = "active",
    selection: SelectionOpt = "",
    reviewer: Annotated[str, typer.Option(help="label-studio, or oracle (needs --labels).")] = "label-studio",
    labels: Annotated[Optional[Path], typer.Option(help="Ground-truth labels for the oracle reviewer.")] = None,
    holdout_share: Annotated[float, typer.Option(help="Share of new verified captures for the real holdout.")] = 0.2,
    generator: Annotated[str, typer.Option(help="Synthetic generator (swap, paste, ...), or none.")] = "swap",
    synthetic: Annotated[int, typer.Option(help="Synthetic images to make per cycle.")] = 100,
    canary: Annotated[float, typer.Option(help="Share of devices (percent) that get a promoted model first.")] = 10.0,
    profile: Annotated[str, typer.Option(help="Training profile: cpu or gpu.")] = "cpu",
    epochs: EpochsOpt = None,
    imgsz: ImgszOpt = None,
    watch_classes: Annotated[Optional[str], typer.Option(
        help="Comma-separated classes training favours and the gate guards like rare ones (default: the "
             "workspace's watch_classes).")] = None,
    backend: Annotated[str, typer.Option(help="Where training runs: local, or vertex (Vertex AI custom job).")] = "local",
    max_cost_usd: Annotated[Optional[float], typer.Option(
        help="Stop paid image generation once this much is spent this cycle.", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of mining, synthesis, training and random selection.")] = 0,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the improvement cycle once, here (no Prefect server needed), and write its report."""
    # Here: the flows load Prefect, torch and ultralytics (seconds), which every other command skips.
    from flows.cycle import improvement_cycle

    if reviewer == "oracle" and (labels is None or not labels.is_dir()):
        raise fail(f"--reviewer oracle needs --labels DIR of ground-truth label files (got {labels})")
    if budget < 1:
        raise fail(f"--budget {budget} must be at least 1")
    chosen = selection_of(strategy, f"seed={seed},{selection}")
    ws = open_workspace(workspace)

    def show(stage: str, state: str, result: dict) -> None:
        if state == "start":
            err.print(f"[cyan]{stage}[/] ...")
        elif not as_json:
            detail = result.get("skipped") or ", ".join(f"{k} {v}" for k, v in result.items()
                                                        if isinstance(v, (int, float, str)) and k != "workspace")
            console.print(f"[bold]{stage}[/]: {state}" + (f" ({detail})" if detail else ""))

    try:
        with ultralytics_to_stderr():
            summary = improvement_cycle(str(ws.settings.workspace), budget=budget, selection=chosen,
                                        reviewer=reviewer, backend=backend, max_cost_usd=max_cost_usd, seed=seed, labels=str(labels) if labels else None,
                                        holdout_share=holdout_share,
                                        generator=None if generator == "none" else generator,
                                        synthetic_count=synthetic, canary_pct=canary, profile=profile,
                                        epochs=epochs, imgsz=imgsz, on_stage=show,
                                        watch_classes=[c for c in (watch_classes or "").split(",") if c] or None)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    emit(summary if as_json else None, as_json, f"report: {summary.get('report_html') or summary['report']}")


@app.command()
def deploy(
    reviewer: Annotated[str, typer.Option(help="The reviewer the scheduled flows use.")] = "label-studio",
    budget: Annotated[int, typer.Option(help="Captures each scheduled review push (and the nightly cycle) sends.")] = 100,
    strategy: Annotated[str, typer.Option(help="active or random.")] = "active",
    selection: SelectionOpt = "",
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the scheduled deployments (ingest, review pull/push, the nightly cycle) against $PREFECT_API_URL.

    Start a server first (`prefect server start`); the UI then lists the deployments and their schedules.
    Schedules come from edgeloop.toml (`schedule_ingest`, `schedule_review_pull`, `schedule_review_push`,
    `schedule_cycle`, cron in UTC).
    """
    from flows.deploy import serve  # Prefect and every flow: seconds, paid only by this command

    chosen = selection_of(strategy, selection)
    serve(open_workspace(workspace).settings, reviewer=reviewer, budget=budget, selection=chosen)
