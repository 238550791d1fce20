"""`edgeloop demo` runs end to end (quick sizes), and never wipes a folder it did not make."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from flows.demo import CLASS_PHRASES, QUICK, RARE, DemoError, run_demo
from store.settings import Settings, Workspace


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    screen = io.StringIO()
    summary = run_demo(tmp_path / "demo", QUICK, console=Console(file=screen, width=200))
    assert summary["agent"]["frames"] == QUICK.camera_frames
    assert summary["agent"]["spooled"] > 0 and summary["agent"]["left_in_spool"] == 0
    assert summary["ingested"] == summary["agent"]["spooled"]
    # The budget is a share of the uploads; the oracle has an answer for every frame it is sent.
    assert 0 < summary["reviewed"] == max(1, int(summary["ingested"] * QUICK.review_share))
    assert summary["challenger"]["parent"] == summary["first_model"]["id"]
    assert isinstance(summary["challenger"]["promoted"], bool)
    _the_gate_verdict_is_the_catalogs(tmp_path / "demo", summary, screen.getvalue())
    _the_report_tells_what_the_terminal_said(tmp_path / "demo", summary, screen.getvalue())


def _the_gate_verdict_is_the_catalogs(path: Path, summary: dict, screen: str) -> None:
    """The quick plan trains one epoch from scratch on 16 images, twice: neither model finds anything on the
    holdout, so the challenger cannot beat the champion by the margin and the gate must refuse. The verdict
    is checked against what the gate recorded and what the registry says, not only the demo's summary."""
    challenger = summary["challenger"]["id"]
    with Workspace(Settings(workspace=path)).catalog.connect() as con:
        [(promoted, champion, reasons)] = con.execute(
            "SELECT promoted, champion_id, reasons FROM gate_decisions WHERE challenger_id = ?", [challenger]
        ).fetchall()
        status = dict(con.execute("SELECT id, status FROM models").fetchall())
    reasons = json.loads(reasons)
    assert champion == summary["first_model"]["id"]
    assert summary["first_model"]["map50_95"] < 0.005 and summary["challenger"]["map50_95"] < 0.005  # the premise
    assert promoted is False and summary["challenger"]["promoted"] is False
    assert reasons[0].startswith("mAP@0.5:0.95 ") and reasons[0].endswith("needs >= +0.0050): fail")
    assert status[challenger] != "champion" and status[champion] == "champion"
    flat = " ".join(screen.split())
    assert f"{challenger}: mAP@0.5:0.95" in flat and "kept the champion" in flat and "PROMOTED" not in flat


def _the_report_tells_what_the_terminal_said(path: Path, summary: dict, screen: str) -> None:
    """The report's headline follows the demo's rare class with the rare boxes review bought and random's
    expectation the demo printed; the cycle's prompts were written with the demo's class phrases."""
    data = json.loads((Path(summary["report"]).parent / "report_data.json").read_text())
    story = data["rare"][0]
    assert story["class"] == RARE and story["why"].startswith("watched")
    printed = re.search(rf"(\d+) {RARE} boxes \(random would have found ~(\d+)\)", " ".join(screen.split()))
    assert printed, screen
    assert story["review"]["boxes"] == int(printed[1]) and story["review"]["captures"] == summary["reviewed"]
    assert abs(story["review"]["random"] - int(printed[2])) <= 0.55
    # The flows opened the workspace themselves and still saw the demo's class phrases.
    with Workspace(Settings(workspace=path)).catalog.connect() as con:
        prompts = con.execute("SELECT prompt, edit_instruction, lineage FROM prompts").fetchall()
    assert prompts and all(json.loads(lineage)["unphrased"] == [] for *_, lineage in prompts)
    assert not any("no helmet" in f"{prompt} {edit}" for prompt, edit, _ in prompts)
    assert all(CLASS_PHRASES[RARE][0] in prompt for prompt, _, lineage in prompts
               if json.loads(lineage)["class"] == RARE)
    assert "EDGELOOP_CLASS_PHRASES" not in os.environ  # put back as it was


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
    assert "WARNING" not in screen and "| INFO" not in screen, screen  # log records go to demo.log too
    assert "report:" in screen and (tmp_path / "demo" / "demo.log").read_text().count("Epoch") > 0  # the chatter went there
