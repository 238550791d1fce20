"""`edgeloop devices`: register edge devices and manage their upload tokens."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from flows.cli.common import JsonOpt, WorkspaceOpt, app, console, fail, open_workspace
from store import devices
from store.devices import DeviceError, list_devices, revoke_device

devices_app = typer.Typer(help="Register edge devices and manage their upload tokens.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")


def _issue_token(name: str, workspace: Path | None, as_json: bool, how: str) -> None:
    """Run `store.devices.<how>` (add_device or rotate_token) and show the token it returns, this once only."""
    ws = open_workspace(workspace)
    try:
        token = getattr(devices, how)(ws.catalog, ws.objects, name)
    except devices.DeviceError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps({"device": name, "token": token}))
    else:
        what = "registered. Token" if how == "add_device" else "has a new token"
        console.print(f"device [bold]{name}[/] {what} (store it now, it is not kept):")
        print(token)


@devices_app.command("add")
def devices_add(name: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Register device NAME and print its upload token (shown only this once)."""
    _issue_token(name, workspace, as_json, "add_device")


@devices_app.command("list")
def devices_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List registered devices and whether they are revoked."""
    rows = list_devices(open_workspace(workspace).catalog)
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
    ws = open_workspace(workspace)
    try:
        revoke_device(ws.catalog, ws.objects, name)
    except DeviceError as exc:
        raise fail(str(exc)) from exc
    console.print(f"device [bold]{name}[/] revoked")


@devices_app.command("rotate")
def devices_rotate(name: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Give NAME a new token (shown only this once); the old one stops working, a revoked device is back in."""
    _issue_token(name, workspace, as_json, "rotate_token")
