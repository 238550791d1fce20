"""The review stage as one typed service: `Selection` parsing, and the CLI and the flow picking alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedback.datasets.yolo_import import import_yolo
from feedback.review.stage import Selection
from feedback.scenes import write_yolo_dataset
from flows.cli import app
from flows.review import review_push_flow
from store.settings import Settings, Workspace
from tests.flows.test_review_cli import _camera


def test_selection_parses_keys_values_and_lists_over_what_is_given() -> None:
    chosen = Selection.parse("diversity=false, per-second=true,watch_classes=no_helmet+vest,seed=3", strategy="random")
    assert chosen == Selection(strategy="random", diversity=False, per_second=True,
                               watch_classes=("no_helmet", "vest"), seed=3)
    assert Selection.parse("") == Selection()


@pytest.mark.parametrize(("text", "named"), [("divers=false", "'divers=false'"), ("rare", "'rare'"),
                                             ("seed=three", "seed"), ("strategy=greedy", "strategy")])
def test_a_bad_selection_names_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="--selection") as caught:
        Selection.parse(text)
    assert named in str(caught.value)


def _site(root: Path) -> tuple[Workspace, Path]:
    ws = Workspace(Settings(workspace=root / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(root / "d", range(2)), "train", progress=False)
    _camera(ws, root / "labels", 6)
    return ws, root / "labels"


def test_review_push_on_the_command_line_and_as_a_flow_pick_alike(tmp_path: Path) -> None:
    """Two copies of one site: `review push` with two switches off, and the flow given the same `Selection`,
    push the same captures with the same score parts, and neither scores the parts switched off."""
    cli_ws, labels = _site(tmp_path / "a")
    flow_ws, _ = _site(tmp_path / "b")
    result = CliRunner().invoke(app, ["review", "push", "--budget", "3", "--no-uncertainty", "--no-diversity",
                                      "--reviewer", "oracle", "--labels", str(labels), "--explain", "--json",
                                      "-w", str(cli_ws.settings.workspace)])
    assert result.exit_code == 0, result.stderr
    by_cli = json.loads(result.stdout)["picks"]
    by_flow = review_push_flow(str(flow_ws.settings.workspace), budget=3, reviewer="oracle", labels=str(labels),
                               selection=Selection(uncertainty=False, diversity=False))["picks"]
    assert [(p["capture"], p["parts"]) for p in by_cli] == [(p["capture"], p["parts"]) for p in by_flow]
    assert len(by_cli) == 3 and not {"uncertainty", "diversity"} & {k for p in by_cli for k in p["parts"]}
    with flow_ws.catalog.connect() as con:  # what the flow stored, not what it returned
        stored = {c for (c,) in con.execute("SELECT capture_id FROM review_tasks").fetchall()}
    assert stored == {p["capture"] for p in by_cli}


def test_cycle_refuses_a_bad_selection_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["cycle", "--selection", "diversity=maybe", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 2 and "--selection diversity" in result.stderr
    assert not (tmp_path / "ws").exists()
