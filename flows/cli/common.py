"""What every `edgeloop` command shares: the app, common options, the workspace a command works on.

Each command group lives in its own module beside this one; a command is a thin shell over `store`/`feedback`.
The terminal helpers (error lines, `--json`, progress) are the device's too: they live in `edge.terminal`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edge.terminal import (  # noqa: F401 - the command modules take these from here
    JsonOpt, as_lines, console, edgeloop_app, emit, err, fail, failing_on, show_progress, ultralytics_quiet,
    ultralytics_to_stderr,
)
from store.settings import Settings, Workspace

app = edgeloop_app("edgeloop", "Improve edge object detectors from their own mistakes.")

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace folder (default: $EDGELOOP_WORKSPACE or ./.edgeloop)."),
]

# Options more than one command takes, declared once so that their flags and help read the same everywhere.
EpochsOpt = Annotated[Optional[int], typer.Option(help="Override the profile's epochs.")]
ImgszOpt = Annotated[Optional[int], typer.Option(help="Override the profile's image size.")]
ClipModelOpt = Annotated[Optional[str], typer.Option(help="open_clip model name (default: settings).")]


def workspace_settings(path: Path | None) -> Settings:
    return Settings(workspace=path) if path else Settings()


def open_workspace(path: Path | None) -> Workspace:
    return Workspace(workspace_settings(path))


def existing_workspace(path: Path | None) -> Workspace | None:
    """The workspace, or None where there is none yet: opening one creates its folder, and a command that
    only reads must not leave a `.edgeloop/` behind in a folder where someone merely tried it."""
    settings = workspace_settings(path)
    local = settings.storage_url is None or settings.catalog_path is None  # what Workspace() would mkdir
    if local and not settings.workspace.is_dir():
        return None
    return Workspace(settings)
