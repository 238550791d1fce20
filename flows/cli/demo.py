"""`edgeloop demo`: the whole loop offline on generated scenes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flows.cli.common import app, fail, ultralytics_to_stderr


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Where the demo keeps its data (recreated).")] = Path("edgeloop-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the generated scenes.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes: checks the wiring in a minute; the models learn little.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the trainer's and exporter's own output too.")] = False,
) -> None:
    """Run the whole loop offline on generated scenes through the production cycle, and end with its report."""
    from dataclasses import replace

    from flows.demo import QUICK, DemoError, DemoPlan, run_demo  # the whole loop: torch, Prefect (seconds)

    out = Console(file=sys.stdout)  # bound now: ultralytics' chatter is about to be sent to stderr
    try:
        with ultralytics_to_stderr():
            run_demo(workspace, replace(QUICK if quick else DemoPlan(), seed=seed), console=out, verbose=verbose)
    except DemoError as exc:
        raise fail(str(exc)) from exc
