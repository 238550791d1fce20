"""The control plane's commands: `serve` (the ingest API), `ingest` (inbox to catalog), `status`."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from feedback.review.effort import CostModel, summarise
from flows.cli.common import JsonOpt, WorkspaceOpt, app, console, emit, err, open_workspace, show_progress
from store.inbox import load_inbox
from store.labels import catalog_classes
from store.review_tasks import task_costs
from store.status import status_counts


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (the API is stateless).")] = 1,
    access_log: Annotated[bool, typer.Option("--access-log", help="Print a line per request (client, method, path, "
                                             "status): who is calling, and what the API answers them.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the ingest API (uvicorn) that devices upload hard examples to."""
    import uvicorn

    if workspace:
        # Workers are separate processes: they read their settings from the environment.
        os.environ["EDGELOOP_WORKSPACE"] = str(workspace)
    uvicorn.run("feedback.ingest.api:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=access_log)


@app.command()
def ingest(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Load the inbox the API wrote into the catalog (idempotent; safe to run concurrently)."""
    ws = open_workspace(workspace)
    with Progress(console=err, transient=True, disable=not show_progress(as_json)) as progress:
        task = progress.add_task("loading inbox", total=None)
        report = load_inbox(ws.catalog, ws.inbox, progress=lambda done, total: progress.update(task, completed=done, total=total))
    result = {k: v for k, v in vars(report).items()}
    emit(result, as_json, ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))


@app.command()
def status(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Counts of captures by device, trigger and predicted class, and the inbox backlog."""
    ws = open_workspace(workspace)
    counts = status_counts(ws.catalog, ws.inbox)
    with ws.catalog.connect() as con:
        efforts, names = [c.effort for c in task_costs(con) if c.effort], catalog_classes(con)
    counts["review_effort"] = summarise(efforts, names, CostModel.from_settings(ws.settings.review_seconds))
    if as_json:
        print(json.dumps(counts, default=str))
        return
    effort = counts.pop("review_effort")
    for key, value in counts.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            table = Table(key.replace("_", " "), "count")
            for name, n in value.items():
                table.add_row(str(name), str(n))
            console.print(table)
        else:
            console.print(f"[bold]{key.replace('_', ' ')}[/]: {json.dumps(value, default=str)}")
    _print_effort(effort)


def _print_effort(effort: dict) -> None:
    """People's time spent on review so far, and what it bought per class (boxes per annotator-hour)."""
    timed = f", {effort['measured_tasks']} timed by Label Studio" if effort["measured_tasks"] else ""
    console.print(f"[bold]review effort[/]: {effort['tasks']} tasks, {effort['seconds'] / 60:.1f} min of people's "
                  f"time{timed}")
    if effort["by_class"]:
        table = Table("class", "verified boxes", "seconds", "boxes per annotator-hour")
        for name, row in effort["by_class"].items():
            table.add_row(name, str(row["boxes"]), f"{row['seconds']:.0f}", str(row["boxes_per_hour"]))
        console.print(table)
