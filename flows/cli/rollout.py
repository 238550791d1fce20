"""Rolling models out: `publish` (export, parity, reference set) and the `rollout` group
(start a canary, judge it, promote, roll back, pin a device)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from feedback.rollout.canary import judge
from feedback.rollout.deployments import (
    RolloutError, pin_device, promote_rollout, rollback_rollout, start_rollout, unpin_device,
)
from feedback.rollout.fleet_table import device_table
from feedback.rollout.model_ref import PublishError, resolve_model
from feedback.training.export import ExportError
from flows.cli.common import JsonOpt, WorkspaceOpt, app, console, emit, fail, open_workspace, ultralytics_quiet
from store.inbox import load_inbox
from store.rollouts import Rollout, active_rollout, fleet_model, latest_rollout


@app.command()
def publish(
    model: Annotated[str, typer.Argument(help="Model id (m-...) or 'champion'.")],
    frames: Annotated[Optional[Path], typer.Option(help="Folder of images to check the export on "
                                                   "(default: the catalog's real holdout).")] = None,
    reference_frames: Annotated[int, typer.Option(help="Frames in the reference set devices check builds on.")] = 4,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the exporter's own output (else it goes to "
                                          "WORKSPACE/logs/publish.log).")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL to ONNX, check it box for box against the .pt, and store the artifact devices pull."""
    # why: publishing loads cv2, supervision and ultralytics, which `import flows.cli` must not
    from feedback.rollout.publish import publish as publish_model

    paths = None
    if frames is not None:
        paths = sorted(p for p in frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not paths:
            raise fail(f"--frames {frames}: no .jpg or .png images there")
    ws = open_workspace(workspace)
    log = ws.settings.workspace / "logs" / "publish.log"
    try:
        # The exporter's banners, AutoUpdate notices and temporary paths mean nothing to the person publishing.
        with ultralytics_quiet(log, verbose=verbose):
            done = publish_model(ws, model, frames=paths, reference_frames=reference_frames)
    except (PublishError, ExportError) as exc:
        raise fail(str(exc)) from exc
    m, p = done.manifest, done.parity
    out = {"model": m.model_version, "onnx_sha256": m.onnx_sha256, "onnx_bytes": m.onnx_bytes,
           "classes": m.classes, "input_size": list(m.input_size), "reference_frames": len(done.reference.frames),
           "reference_boxes": sum(len(f.detections) for f in done.reference.frames),
           "parity": {"frames": p.frames, "boxes": p.boxes, "max_box_px": p.max_box_px,
                      "max_conf_diff": p.max_conf_diff}}
    emit(out, as_json, f"published {m.model_version}: ONNX {m.onnx_sha256[:12]} ({m.onnx_bytes / 1e6:.1f} MB, "
                       f"input {m.input_size[0]}x{m.input_size[1]}); matches the .pt on {p.frames} holdout frames "
                       f"({p.boxes} boxes, worst {p.max_box_px} px / {p.max_conf_diff} score); reference set of "
                       f"{out['reference_frames']} frames ({out['reference_boxes']} boxes)")


rollout_app = typer.Typer(help="Roll a published model out to the devices: canary, judge, promote or roll back.",
                          no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")


def _rollout_dict(r: Rollout) -> dict:
    return {"id": r.id, "model": r.model_id, "baseline": r.baseline_model_id, "canary_pct": r.canary_pct,
            "state": r.state, "started_at": r.started_at.isoformat(), "updated_at": r.updated_at.isoformat()}


@rollout_app.command("start")
def rollout_start(
    model: Annotated[str, typer.Argument(help="A published model id (m-...) or 'champion'.")],
    canary: Annotated[float, typer.Option(help="Percent of the fleet that gets it first; again with a larger "
                                          "value grows the canary (the same devices stay in it).")] = 10.0,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send MODEL to the canary share of the devices (bucketed by a stable hash of their names)."""
    ws = open_workspace(workspace)
    try:
        r = start_rollout(ws, resolve_model(ws, model).id, canary)
    except (RolloutError, PublishError) as exc:
        raise fail(str(exc)) from exc
    emit(_rollout_dict(r), as_json, f"rollout {r.id}: {r.model_id} to {r.canary_pct:g}% of the fleet "
                                    f"(the rest stays on {r.baseline_model_id or 'its installed model'})")


@rollout_app.command("status")
def rollout_status(
    ingest: Annotated[bool, typer.Option(help="Load the inbox first, so the judgment sees the latest heartbeats.")]
        = True,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The rollout, the canary's judgment against the rest of the fleet, and every device's model."""
    ws = open_workspace(workspace)
    if ingest:
        load_inbox(ws.catalog, ws.inbox)
    with ws.catalog.connect() as con:
        current, fleet = active_rollout(con) or latest_rollout(con), fleet_model(con)
    judgment = judge(ws, current).as_dict() if current else None
    devices = device_table(ws)
    out = {"rollout": _rollout_dict(current) if current else None, "fleet_model": fleet,
           "healthy": judgment["healthy"] if judgment else None,
           "reasons": judgment["reasons"] if judgment else [], "judgment": judgment, "devices": devices}
    if as_json:
        print(json.dumps(out, default=str))
        return
    if current is None:
        console.print(f"no rollout yet; fleet model: {fleet or 'each device its installed model'}")
    else:
        word = "[green]healthy[/]" if out["healthy"] else "[red]not healthy[/]"
        console.print(f"rollout {current.id}: {current.model_id} at {current.canary_pct:g}% ({current.state}); "
                      f"fleet model {fleet or 'installed'}; canary {word}: " + "; ".join(out["reasons"]))
        table = Table("version", "devices", "fps", "p50 ms", "p99 ms", "errors", "uploads/h by trigger",
                      "detections/frame (random sample)")
        for version, s in judgment["versions"].items():  # type: ignore[index]
            table.add_row(version, str(len(s["devices"])), str(s["fps"]), str(s["latency_p50_ms"]),
                          str(s["latency_p99_ms"]), str(s["errors"]),
                          ", ".join(f"{k} {v}" for k, v in s["uploads_per_hour"].items()),
                          ", ".join(f"{k} {v}" for k, v in s["detections_per_frame"].items()))
        console.print(table)
    table = Table("device", "bucket", "should run", "why", "runs", "update")
    for d in devices:
        update = d["update_state"] or ""
        if d["update_detail"]:
            update += f": {d['update_detail']}"
        table.add_row(d["device"], f"{d['bucket']:.1f}", d["desired"] or "installed", d["reason"],
                      d["running"] or "-", update)
    console.print(table)


@rollout_app.command("promote")
def rollout_promote(
    force: Annotated[bool, typer.Option("--force", help="Promote even an unhealthy canary.")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the canary's model the whole fleet's, if the canary is healthy."""
    ws = open_workspace(workspace)
    load_inbox(ws.catalog, ws.inbox)  # judge on the latest heartbeats
    try:
        r, judgment = promote_rollout(ws, force=force)
    except RolloutError as exc:
        raise fail(str(exc)) from exc
    emit({**_rollout_dict(r), "healthy": judgment["healthy"], "reasons": judgment["reasons"], "forced": force},
         as_json, f"{r.model_id} is now the fleet's model" +
         ("" if judgment["healthy"] else " (forced: " + "; ".join(judgment["reasons"]) + ")"))


@rollout_app.command("rollback")
def rollout_rollback(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Undo the latest rollout in force: its devices go back to what the fleet ran before it."""
    ws = open_workspace(workspace)
    try:
        r = rollback_rollout(ws)
    except RolloutError as exc:
        raise fail(str(exc)) from exc
    with ws.catalog.connect() as con:
        fleet = fleet_model(con)
    emit({**_rollout_dict(r), "fleet_model": fleet}, as_json,
         f"rolled back {r.id} ({r.model_id}); the fleet runs {fleet or 'its installed model'}")


@rollout_app.command("pin")
def rollout_pin(
    device: Annotated[str, typer.Argument(help="A registered device.")],
    model: Annotated[Optional[str], typer.Argument(help="A published model id; leave out with --clear.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Unpin: the device follows rollouts again.")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold DEVICE on MODEL whatever rollouts do (a device under investigation, a site that must not change)."""
    if clear == (model is not None):
        raise fail("give either MODEL or --clear")
    ws = open_workspace(workspace)
    try:
        pin_device(ws, device, model) if model else unpin_device(ws, device)
    except RolloutError as exc:
        raise fail(str(exc)) from exc
    emit({"device": device, "pinned": model}, as_json,
         f"{device} pinned to {model}" if model else f"{device} follows rollouts again")
