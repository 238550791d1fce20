"""`python -m flows` runs the `edgeloop` command line (for tests and environments without scripts)."""

from flows.cli import app

app(prog_name="edgeloop")
