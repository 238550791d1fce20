"""The device's own command line: it runs where only `edgeloop[edge]` is installed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SERVER_SIDE = ("store", "feedback", "flows", "duckdb", "prefect", "torch", "ultralytics", "label_studio_sdk", "fastapi")


def test_the_device_commands_run_without_anything_server_side() -> None:
    """With every server-side package unimportable (as on a Jetson), `edgeloop-device --help` lists both commands
    and `agent --help` explains itself."""
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in SERVER_SIDE)
    script = (f"import sys; {block}\n"
              "from edge.cli import app\n"
              "from typer.testing import CliRunner\n"
              "runner = CliRunner()\n"
              "top = runner.invoke(app, ['--help'])\n"
              "agent = runner.invoke(app, ['agent', '--help'])\n"
              "print(top.exit_code, agent.exit_code)\n"
              "print(top.output)\n"
              "print(agent.output)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})  # rich cuts long option names at 80
    assert done.returncode == 0, done.stderr
    codes, _, output = done.stdout.partition("\n")
    assert codes == "0 0"
    assert "agent" in output and "upload" in output
    assert "--follow-deployments" in output and "--trust-root" in output
