"""`edgeloop demo` runs end to end (quick sizes), and never wipes a folder it did not make."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from flows.demo import QUICK, DemoError, run_demo


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "demo", QUICK, console=Console(quiet=True))
    assert summary["agent"]["frames"] == QUICK.camera_frames
    assert summary["agent"]["spooled"] > 0 and summary["agent"]["left_in_spool"] == 0
    assert summary["ingested"] == summary["agent"]["spooled"]
    # The budget is a share of the uploads; the oracle has an answer for every frame it is sent.
    assert 0 < summary["reviewed"] == max(1, int(summary["ingested"] * QUICK.review_share))
    assert summary["challenger"]["parent"] == summary["first_model"]["id"]
    assert isinstance(summary["challenger"]["promoted"], bool)


def test_demo_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match="not a demo workspace"):
        run_demo(tmp_path / "mine", QUICK, console=Console(quiet=True))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def run_in_terminal(args: list[str], cwd: Path, columns: int = 100) -> tuple[int, str]:
    """`args` with a pseudo-terminal as stdin, stdout and stderr, as a person's shell runs it: its exit code and
    everything it wrote to the screen."""
    import os
    import pty
    import subprocess

    main, side = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(args, stdin=side, stdout=side, stderr=side, cwd=cwd, env=env, close_fds=True)
    os.close(side)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return child.wait(timeout=600), b"".join(chunks).decode(errors="replace")


def test_the_demo_in_a_terminal_prints_only_its_own_lines(tmp_path: Path) -> None:
    import sys

    code, screen = run_in_terminal([sys.executable, "-m", "flows", "demo", "--quick", "-w", "demo"], tmp_path)
    assert code == 0, screen[-3000:]
    lines = screen.replace("\r\n", "\n").split("\n")
    assert len(lines) < 40, screen  # the issue counted 674, ~650 of them ultralytics' bars
    assert "Epoch" not in screen and "box_loss" not in screen and "train:" not in screen
    assert "report:" in screen and (tmp_path / "demo" / "demo.log").read_text().count("Epoch") > 0  # the chatter went there
