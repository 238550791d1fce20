"""`edgeloop publish` through the CLI: the person sees our one line, the exporter's chatter goes to the workspace's
log (or to stderr with --verbose). Real export of the scene model, real catalog.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from feedback.training.gate_run import register_weights
from flows.cli import app
from store.settings import Settings, Workspace

CHATTER = ("Ultralytics", "ONNX:", "onnxslim", "AutoUpdate", "Export complete", "edgeloop-publish-")


def test_publish_keeps_the_exporters_output_off_the_terminal(tmp_path: Path, scene_pt: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "holdout", range(900, 903)), "holdout", progress=False)
    model, _ = register_weights(ws, scene_pt)

    result = CliRunner().invoke(app, ["publish", model.id, "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith(f"published {model.id}: ONNX ")
    assert not [c for c in CHATTER if c in result.output], result.output  # stdout and stderr alike
    log = (tmp_path / "ws" / "logs" / "publish.log").read_text()
    assert "ONNX:" in log and "Export complete" in log  # kept, where someone debugging an export can read it

    verbose = CliRunner().invoke(app, ["publish", model.id, "--verbose", "--json", "-w", str(tmp_path / "ws")])
    assert verbose.exit_code == 0, verbose.output
    assert json.loads(verbose.stdout)["model"] == model.id  # stdout stays the result
    assert "ONNX:" in verbose.stderr
