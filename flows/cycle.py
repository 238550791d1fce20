"""`improvement_cycle`: the whole loop as one parent flow, stage by stage, skipping stages with nothing to do.

ingest -> review push -> review pull -> mine -> synthesize -> retrain -> publish, then the cycle report.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from prefect import flow

from edge.protocol import utc_now
from feedback.report.render import write_cycle_report
from feedback.review.stage import Selection
from flows.common import open_workspace
from flows.ingest import ingest_flow
from flows.mine import mine_flow
from flows.publish import publish_flow
from flows.retrain import retrain_flow
from flows.review import review_pull_flow, review_push_flow
from flows.synthesize import synthesize_flow

StageHook = Callable[[str, str, dict[str, Any]], None]  # (stage, "start" | "done" | "skipped", result)


def stage_status(result: Mapping[str, Any]) -> str:
    """"skipped" where the stage returned `Skipped` (a reason), else "done": review pull's own `skipped` is a count of
    tasks people skipped, and a pull that collected some of those did its work."""
    return "skipped" if isinstance(result.get("skipped"), str) else "done"


@flow(name="improvement-cycle", log_prints=True)
def improvement_cycle(
    workspace: str | None = None,
    budget: int = 100,
    selection: Selection | None = None,
    reviewer: str = "label-studio",
    labels: str | None = None,
    holdout_share: float = 0.2,
    generator: str | None = "swap",
    synthetic_count: int = 100,
    max_cost_usd: float | None = None,
    canary_pct: float = 10.0,
    profile: str = "cpu",
    backend: str = "local",
    epochs: int | None = None,
    imgsz: int | None = None,
    seed: int = 0,
    watch_classes: list[str] | None = None,
    on_stage: StageHook | None = None,
) -> dict[str, Any]:
    """Run every stage once, in order; a stage with nothing to do says so and the cycle goes on.

    `selection` is review push's (its watch classes default to the cycle's `watch_classes`, then the workspace's).
    Each stage flow decides by itself whether it has anything to do. `on_stage` lets a caller (the demo, `edgeloop
    cycle`) show progress; it is not a flow parameter a deployment sets. The cycle's summary (report.json) and its report (report.html, self-contained, with
    report_data.json) go under `<workspace>/cycles/<cycle id>/`.
    """
    ws = open_workspace(workspace)
    cycle_id = f"{utc_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    out = ws.settings.workspace / "cycles" / cycle_id
    out.mkdir(parents=True, exist_ok=True)
    hook = on_stage or (lambda *_: None)
    # watch_classes goes in for the report: its headline follows the watched classes first.
    summary: dict[str, Any] = {"cycle": cycle_id, "workspace": str(ws.settings.workspace),
                               "started_at": utc_now().isoformat(), "watch_classes": list(watch_classes or []),
                               "stages": []}

    def stage(name: str, run: Callable[[], dict[str, Any]], skip: str | None = None) -> dict[str, Any]:
        hook(name, "start", {})
        started = time.perf_counter()
        result = {"skipped": skip} if skip else run()
        status = stage_status(result)
        summary["stages"].append({"name": name, "status": status, "seconds": round(time.perf_counter() - started, 1),
                                  "result": result})
        hook(name, status, result)
        return result

    selection = selection or Selection(seed=seed)
    if watch_classes and not selection.watch_classes:
        selection = selection.model_copy(update={"watch_classes": tuple(watch_classes)})
    # Loading the inbox is idempotent and cheap: the cycle looks first only to say "skipped" in its report.
    stage("ingest", lambda: ingest_flow(workspace), skip=None if any(ws.inbox.backlog().values()) else
          "the inbox is empty")
    stage("review push", lambda: review_push_flow(workspace, budget, reviewer, labels, selection))
    stage("review pull", lambda: review_pull_flow(workspace, reviewer, labels, holdout_share))
    mined = stage("mine", lambda: mine_flow(workspace, seed=seed))
    stage("synthesize", lambda: synthesize_flow(workspace, generator, synthetic_count, seed, max_cost_usd,
                                                new_blind_spots=not mined.get("skipped")))
    retrained = stage("retrain", lambda: retrain_flow(workspace, profile, epochs, imgsz, seed=seed,
                                                      report_dir=str(out / "evaluation"), backend=backend,
                                                      watch_classes=watch_classes))
    gate = retrained.get("gate")
    stage("publish", lambda: publish_flow(workspace, gate["challenger"] if gate else None, canary_pct,
                                          promoted=bool(gate and gate["promoted"])))
    summary["finished_at"] = utc_now().isoformat()
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["report"] = str(out / "report.json")
    hook("report", "start", {})
    summary["report_html"] = str(write_cycle_report(ws, summary, out))
    hook("report", "done", {"html": summary["report_html"]})
    return summary
