"""`edgeloop keys init|rotate`: the keys folder, the pinned root's version chain, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app


def test_init_then_rotate_walks_the_root_up_and_bad_input_is_named(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = CliRunner().invoke(app, ["keys", "init", "--out", str(keys), "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["root"] == str(keys / "root.json")
    before = json.loads((keys / "root.json").read_text())["signed"]
    rotated = CliRunner().invoke(app, ["keys", "rotate", "targets", "--keys", str(keys), "--json"])
    assert rotated.exit_code == 0, rotated.output
    after = json.loads((keys / "root.json").read_text())["signed"]
    assert after["version"] == before["version"] + 1 == 2 and (keys / "2.root.json").is_file()
    assert after["roles"]["targets"]["keyids"] != before["roles"]["targets"]["keyids"]
    assert after["roles"]["root"]["keyids"] == before["roles"]["root"]["keyids"]
    again = CliRunner().invoke(app, ["keys", "init", "--out", str(keys)])
    assert again.exit_code == 2 and "already holds keys" in again.stderr
    wrong = CliRunner().invoke(app, ["keys", "rotate", "snapshot", "--keys", str(keys)])
    assert wrong.exit_code == 2 and "'snapshot' is not one of root, targets, online" in wrong.stderr
