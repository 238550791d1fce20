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
