"""The `edgeloop` command line: one module per command group, all on the one typer app in `common`.

Importing this package registers every command; `app` is the console entry point.
"""

from __future__ import annotations

import sys

# Imported for their side effect, each registering its commands; in this order they appear in --help.
from flows.cli import devices, server, device, review, autolabel, mining, synthesis, training, cycle, rollout, keys, demo  # noqa: F401, I001
from flows.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name="edgeloop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
