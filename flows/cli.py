"""The `edgeloop` command line: devices, the ingest API, inbox loading, status, uploads, demo.

Each command is a thin shell over a `store`/`feedback` function; errors name the bad value.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="edgeloop",
    help="Improve edge object detectors from their own mistakes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(help="Register edge devices and manage their upload tokens.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace folder (default: $EDGELOOP_WORKSPACE or ./.edgeloop)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _workspace(path: Path | None):  # -> store.settings.Workspace (imported lazily: `edge` installs lack it)
    from store.settings import Settings, Workspace

    settings = Settings(workspace=path) if path else Settings()
    return Workspace(settings)


# ----------------------------------------------------------------------------- devices


@devices_app.command("add")
def devices_add(name: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Register device NAME and print its upload token (shown only this once)."""
    from store.devices import DeviceError, add_device

    ws = _workspace(workspace)
    try:
        token = add_device(ws.catalog, ws.objects, name)
    except DeviceError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps({"device": name, "token": token}))
    else:
        console.print(f"device [bold]{name}[/] registered. Token (store it now, it is not kept):")
        print(token)


@devices_app.command("list")
def devices_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List registered devices and whether they are revoked."""
    from store.devices import list_devices

    rows = list_devices(_workspace(workspace).catalog)
    if as_json:
        print(json.dumps([{"device": d.name, "created_at": d.created_at.isoformat(),
                           "revoked_at": d.revoked_at.isoformat() if d.revoked_at else None} for d in rows]))
        return
    table = Table("device", "created", "revoked")
    for d in rows:
        table.add_row(d.name, f"{d.created_at:%Y-%m-%d %H:%M}", f"{d.revoked_at:%Y-%m-%d %H:%M}" if d.revoked_at else "")
    console.print(table)


@devices_app.command("revoke")
def devices_revoke(name: str, workspace: WorkspaceOpt = None) -> None:
    """Revoke NAME's token; the ingest API refuses it within seconds."""
    from store.devices import DeviceError, revoke_device

    ws = _workspace(workspace)
    try:
        revoke_device(ws.catalog, ws.objects, name)
    except DeviceError as exc:
        raise fail(str(exc)) from exc
    console.print(f"device [bold]{name}[/] revoked")


# ----------------------------------------------------------------------------- server side


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (the API is stateless).")] = 1,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the ingest API (uvicorn) that devices upload hard examples to."""
    import uvicorn

    if workspace:
        # Workers are separate processes: they read their settings from the environment.
        os.environ["EDGELOOP_WORKSPACE"] = str(workspace)
    uvicorn.run("feedback.ingest.api:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=False)


@app.command()
def ingest(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Load the inbox the API wrote into the catalog (idempotent; safe to run concurrently)."""
    from rich.progress import Progress

    from store.inbox import load_inbox

    ws = _workspace(workspace)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("loading inbox", total=None)
        report = load_inbox(ws.catalog, ws.inbox, progress=lambda done, total: progress.update(task, completed=done, total=total))
    result = {k: v for k, v in vars(report).items()}
    if as_json:
        print(json.dumps(result))
    else:
        console.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))


@app.command()
def status(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Counts of captures by device, trigger and predicted class, and the inbox backlog."""
    from store.status import status_counts

    ws = _workspace(workspace)
    counts = status_counts(ws.catalog, ws.inbox)
    if as_json:
        print(json.dumps(counts, default=str))
        return
    for key, value in counts.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            table = Table(key.replace("_", " "), "count")
            for name, n in value.items():
                table.add_row(str(name), str(n))
            console.print(table)
        else:
            console.print(f"[bold]{key.replace('_', ' ')}[/]: {json.dumps(value, default=str)}")


# ----------------------------------------------------------------------------- device side


@app.command()
def upload(
    images: Annotated[list[Path], typer.Argument(help="JPEG or PNG files the model got wrong.", show_default=False)],
    server: Annotated[str, typer.Option(help="Ingest API base URL.", envvar="EDGELOOP_SERVER")],
    token: Annotated[str, typer.Option(help="Device token (edgeloop devices add).", envvar="EDGELOOP_TOKEN")],
    trigger: Annotated[str, typer.Option(help="Why: operator, uncertainty, flicker or random.")] = "operator",
    note: Annotated[Optional[str], typer.Option(help="What is wrong, for the reviewers.")] = None,
    camera: Annotated[str, typer.Option(help="Camera name recorded with the capture.")] = "manual",
    model_version: Annotated[str, typer.Option(help="Model that saw the frame, if known.")] = "unknown",
    as_json: JsonOpt = False,
) -> None:
    """Report frames the model got wrong through the same API the devices use."""
    from edge.report import UploadError, upload_files

    try:
        results = upload_files(images, server=server, token=token, trigger=trigger, note=note,
                               camera=camera, model_version=model_version, progress=not as_json)
    except UploadError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(results))
    else:
        for r in results:
            console.print(f"{r['file']}: {'already stored' if r['duplicate'] else 'stored'} as {r['id'][:12]}")


@app.command()
def agent(
    source: Annotated[str, typer.Option(help="rtsp://..., usb:0, a video file or an image folder.")],
    model: Annotated[Path, typer.Option(help="Detector: .onnx (ONNX Runtime) or .engine (TensorRT).")],
    server: Annotated[str, typer.Option(help="Ingest API base URL.", envvar="EDGELOOP_SERVER")],
    token: Annotated[str, typer.Option(help="Device token (edgeloop devices add).", envvar="EDGELOOP_TOKEN")],
    device: Annotated[Optional[str], typer.Option(help="Device name; asked of the server when omitted.")] = None,
    camera: Annotated[str, typer.Option(help="Camera name recorded with captures.")] = "cam0",
    spool: Annotated[Path, typer.Option(help="Durable on-disk queue of hard examples.")] = Path("edgeloop-spool"),
    spool_max_mb: Annotated[int, typer.Option(help="Spool size cap; the lowest-priority oldest go first.")] = 1024,
    alert_webhook: Annotated[Optional[str], typer.Option(help="URL to POST signed alerts to.")] = None,
    alert_secret: Annotated[Optional[str], typer.Option(help="Standard Webhooks secret (whsec_...).",
                                                        envvar="EDGELOOP_ALERT_SECRET")] = None,
    alert_classes: Annotated[str, typer.Option(help="Comma-separated classes that raise alerts.")] = "",
    alert_confidence: Annotated[float, typer.Option(help="Confidence an alert class must reach.")] = 0.85,
    operator_port: Annotated[Optional[int], typer.Option(help="Serve POST /flag on 127.0.0.1:PORT (0: any).")] = None,
    random_rate: Annotated[float, typer.Option(help="Share of frames uploaded as the unbiased sample.")] = 0.01,
    budget_per_hour: Annotated[float, typer.Option(help="Hard-example uploads allowed per hour.")] = 120.0,
    heartbeat_s: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 30.0,
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after N frames (default: run until stopped).")] = None,
    drain_s: Annotated[float, typer.Option(help="At exit, wait this long for the spool to drain.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Run the edge agent: detect on a stream, alert, mine hard examples and upload them durably."""
    from edge.runner import AgentSetupError, run_agent

    try:
        summary = run_agent(
            source=source, model=model, server=server, token=token, device=device, camera=camera,
            spool=spool, spool_max_bytes=spool_max_mb * 1024 * 1024, alert_webhook=alert_webhook,
            alert_secret=alert_secret, alert_classes=[c for c in alert_classes.split(",") if c],
            alert_confidence=alert_confidence, operator_port=operator_port, random_rate=random_rate,
            budget_per_hour=budget_per_hour, heartbeat_s=heartbeat_s, max_frames=max_frames, drain_s=drain_s,
            live=not as_json, console=err,
        )
    except AgentSetupError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        console.print_json(json.dumps(summary, default=str))


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Where the demo keeps its data (recreated).")] = Path("edgeloop-demo"),
    frames: Annotated[int, typer.Option(help="Generated frames the simulated device uploads.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the generated scenes.")] = 0,
) -> None:
    """Run the whole loop offline on generated scenes, and show what each stage did."""
    from flows.demo import DemoError, run_demo

    try:
        run_demo(workspace, frames=frames, seed=seed, console=console)
    except DemoError as exc:
        raise fail(str(exc)) from exc


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name="edgeloop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
