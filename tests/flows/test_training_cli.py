"""import → train → gate → models through the CLI, on generated scenes, training for real (tiny)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from feedback.scenes import CLASSES, write_yolo_dataset
from flows.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_import_train_gate_round_trip(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    train_dir = write_yolo_dataset(tmp_path / "train", range(24))
    hold_dir = write_yolo_dataset(tmp_path / "hold", range(900, 906))
    assert run("import", str(train_dir), "--split", "sideways", "-w", ws)[0] == 2
    code, out, _ = run("import", str(train_dir), "--split", "train", "-w", ws, "--json")
    assert code == 0 and json.loads(out)["labels_added"] == 24
    assert json.loads(run("import", str(hold_dir), "--split", "holdout", "-w", ws, "--json")[1])["labels_added"] == 6
    code, _, err = run("import", str(hold_dir), "--split", "train", "--names", "a,b,c,d", "-w", ws)
    assert code == 2 and "do not match" in err

    code, out, err = run("train", "--scratch", "--epochs", "1", "--imgsz", "128", "-w", ws, "--json")
    assert code == 0, err
    first = json.loads(out)
    code, out, err = run("gate", first["model"], "-w", ws, "--json")
    assert code == 0, err
    verdict = json.loads(out)
    assert verdict["promoted"] is True and verdict["champion"] is None
    assert 0.0 <= verdict["challenger_map50_95"] <= 1.0

    child = json.loads(run("train", "--epochs", "1", "--imgsz", "128", "-w", ws, "--json")[1])
    assert child["parent"] == first["model"]
    verdict = json.loads(run("gate", child["model"], "-w", ws, "--json")[1])
    assert verdict["champion"] == first["model"]
    assert any("mAP@0.5:0.95" in r for r in verdict["reasons"])

    registry = {m["id"]: m for m in json.loads(run("models", "-w", ws, "--json")[1])}
    expected_child = "champion" if verdict["promoted"] else "rejected"
    assert registry[child["model"]]["status"] == expected_child
    assert registry[first["model"]]["status"] == ("retired" if verdict["promoted"] else "champion")
    assert run("gate", "m-missing", "-w", ws)[0] == 2


def test_eval_writes_json_predictions_and_report(tmp_path: Path) -> None:
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    data = write_yolo_dataset(tmp_path / "d", range(4))
    weights, coco80 = tmp_path / "random.pt", tmp_path / "coco80.pt"
    YOLO("yolov8n.yaml").save(str(coco80))
    code, _, err = run("eval", "--model", str(coco80), "--data", str(data), "--json", str(tmp_path / "x.json"))
    assert code == 2 and "80" in err  # the data's 4 classes are not the model's 80
    model = YOLO("yolov8n.yaml")
    model.model = DetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False)
    model.model.names = dict(enumerate(CLASSES))
    model.save(str(weights))
    out, preds, report = tmp_path / "m.json", tmp_path / "pred.json", tmp_path / "report"
    code, stdout, err = run("eval", "--model", str(weights), "--data", str(data), "--json", str(out),
                            "--coco-predictions", str(preds), "--report", str(report))
    assert code == 0, err
    metrics = json.loads(out.read_text())
    assert {"map50", "map50_95", "precision", "recall", "per_class", "operating_point"} <= set(metrics)
    assert "mAP@0.5:0.95" in stdout
    assert isinstance(json.loads(preds.read_text()), list)
    assert any(report.iterdir())
    code, _, err = run("eval", "--model", str(tmp_path / "nope.pt"), "--data", str(data), "--json", str(out))
    assert code == 2 and "nope.pt" in err
