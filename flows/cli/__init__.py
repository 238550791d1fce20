"""The `edgeloop` command line: one module per command group, all on the one typer app in `common`.

Importing this package registers every command; `app` is the console entry point.
"""

from __future__ import annotations

import sys

# Imported for their side effect, each registering its commands; in this order they appear in --help.
from flows.cli import devices, server  # noqa: F401, I001
from edge.cli import agent, upload
from flows.cli.common import app

# The device's own commands (`edgeloop-device`), here too so one `edgeloop` does everything on a server.
app.command()(upload)
app.command()(agent)
from flows.cli import review, autolabel, mining, synthesis, training, cycle, rollout, keys, demo  # noqa: E402, F401, I001

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name="edgeloop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
