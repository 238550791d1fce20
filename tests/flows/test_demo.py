"""`edgeloop demo` runs end to end on generated data, and never wipes a folder it did not make."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from flows.demo import DemoError, run_demo


def test_demo_runs_the_loop_so_far(tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "demo", frames=6, console=Console(quiet=True))
    assert summary["uploaded"] == 6 and summary["duplicate_resend"] is True
    assert summary["stranger"] == "HTTP 401 unknown_token"
    assert summary["ingested"] == 6 and summary["ingested_again"] == 0
    # A second run recreates its own workspace rather than piling onto the first.
    assert run_demo(tmp_path / "demo", frames=3, console=Console(quiet=True))["ingested"] == 3


def test_demo_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match="not a demo workspace"):
        run_demo(tmp_path / "mine", frames=1, console=Console(quiet=True))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
