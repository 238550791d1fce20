"""`edgeloop keys`: the fleet's signing keys for rollouts (TUF): make them once, rotate one in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from feedback.rollout.trust import TrustSetupError, init_keys, rotate_key
from flows.cli.common import JsonOpt, app, emit, fail

keys_app = typer.Typer(help="The fleet's signing keys: devices install only models these keys signed.")
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def init(
    out: Annotated[Path, typer.Option(help="A folder outside the workspace (ideally off the server) for the keys.")],
    as_json: JsonOpt = False,
) -> None:
    """Make the root, targets and online keys and the root metadata devices pin (`agent --trust-root`).

    Keep root.pem and targets.pem away from the server; the online key (snapshot, timestamp) may live with it.
    Then set EDGELOOP_SIGNING_KEYS to the folder where `publish` and `rollout` run, and copy root.json to every
    device."""
    try:
        root = init_keys(out)
    except (TrustSetupError, OSError) as exc:
        raise fail(f"--out {out}: {exc}") from exc
    emit({"keys": str(out), "root": str(root)}, as_json,
         f"keys in {out}; pin {root} on each device (`edgeloop agent --trust-root {root.name}`) and set "
         f"EDGELOOP_SIGNING_KEYS={out} where you publish")


@keys_app.command("rotate")
def rotate(
    role: Annotated[str, typer.Argument(help="targets, online or root.")],
    keys: Annotated[Path, typer.Option(help="The keys folder `keys init` made.")],
    as_json: JsonOpt = False,
) -> None:
    """Replace one key: root.json goes one version up, signed by the old root key (and the new one for a root
    rotation). Devices follow the chain on their next check; publish again so the metadata is re-signed."""
    try:
        root = rotate_key(keys, role)
    except (TrustSetupError, OSError, KeyError) as exc:
        raise fail(f"keys rotate {role} --keys {keys}: {exc}") from exc
    emit({"role": role, "root": str(root)}, as_json, f"{role} key rotated; {root} is the new root (devices follow it)")
