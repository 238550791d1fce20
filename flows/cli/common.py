"""What every `edgeloop` command shares: the app, consoles, common options, output and error helpers.

Each command group lives in its own module beside this one; a command is a thin shell over `store`/`feedback`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="edgeloop",
    help="Improve edge object detectors from their own mistakes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace folder (default: $EDGELOOP_WORKSPACE or ./.edgeloop)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def emit(result: object, as_json: bool, human: object | None = None) -> None:
    """`--json`: the result as one JSON line on stdout; otherwise `human` (or the result) for people."""
    if as_json:
        print(json.dumps(result, default=str))
    else:
        console.print(result if human is None else human)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def open_workspace(path: Path | None):  # -> store.settings.Workspace (imported lazily: `edge` installs lack it)
    from store.settings import Settings, Workspace

    settings = Settings(workspace=path) if path else Settings()
    return Workspace(settings)


@contextlib.contextmanager
def ultralytics_to_stderr() -> Iterator[None]:
    """ultralytics logs and draws progress on stdout; here both go to stderr, so stdout carries
    only our result (`--json` output stays parseable). Everything is put back afterwards."""
    import logging

    from ultralytics.utils import LOGGER

    handlers = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler, stream in zip(handlers, saved, strict=True):
            handler.stream = stream
