"""`edgeloop synthesize` and `edgeloop synthetic report` through the CLI, on a real catalog with the scene model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
from typer.testing import CliRunner

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, write_yolo_dataset
from flows.cli import app
from store.blobs import sha256_hex
from store.models import register_model
from store.settings import Settings, Workspace

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_synthesize_for_a_class_then_report(tmp_path: Path, scene_pt: Path):
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "train", range(10), class_weights=(0.6, 0.4, 0, 0)), "train",
                progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "holdout", range(50, 53)), "holdout", progress=False)
    data = scene_pt.read_bytes()
    ws.blobs.put(data)
    with ws.catalog.connect() as con:
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?",
                    [register_model(con, sha256_hex(data), classes=list(CLASSES), imgsz=160)])
    w = ["-w", str(tmp_path / "ws")]

    code, _, err = run("synthesize", "--n", "2", *w)
    assert code == 2 and "exactly one of --cluster ID, --all or --class NAME" in err
    code, _, err = run("synthesize", "--n", "2", "--class", "no_helmet", "--generator", "nope", *w)
    assert code == 2 and "unknown generator 'nope'" in err
    code, _, err = run("synthesize", "--n", "2", "--class", "bare_head", *w)
    assert code == 2 and "--class 'bare_head'" in err
    code, _, err = run("synthesize", "--n", "2", "--cluster", "c-missing", *w)
    assert code == 2 and "c-missing" in err

    code, out, err = run("synthesize", "--n", "4", "--class", "no_helmet", "--seed", "1", "--json", *w)
    assert code == 0, err
    made = json.loads(out)
    assert made["generator"] == "swap" and made["target_class"] == CLASSES.index("no_helmet")
    assert made["kept"] + sum(made["rejected"].values()) == 4 and made["kept"] >= 2
    code, out, err = run("synthesize", "--n", "2", "--class", "no_helmet", "--generator", "paste",
                         "--confusable", "helmet", "--seed", "2", *w)
    assert code == 0, err
    assert "paste" in out  # the table of runs

    sheets = tmp_path / "sheets"
    code, out, err = run("synthetic", "report", "--json", "--out", str(sheets), *w)
    assert code == 0, err
    report = json.loads(out)
    assert report["by_cluster"]["class:no_helmet"]["kept"] == report["kept"] >= made["kept"]
    assert report["kept"] + report["rejected"] == 6 and len(report["runs"]) == 2
    assert report["kept_hard"] <= report["kept"]
    kept_sheet = sheets / "class_no_helmet_kept.png"
    assert str(kept_sheet) in report["sheets"] and cv2.imread(str(kept_sheet)) is not None
    code, out, _ = run("synthetic", "report", "--out", str(sheets), *w)
    assert code == 0 and "class:no_helmet" in out
