"""import → train → gate → models (and models register) through the CLI, on generated scenes,
training for real (tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def scene_model(path: Path, seed: int, names: list[str] = CLASSES) -> Path:
    """A YOLOv8n for the scenes with seeded random weights, saved as trained at imgsz 160."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    model = YOLO("yolov8n.yaml")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.model = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    model.model.names = dict(enumerate(names))
    model.ckpt = {"train_args": {"imgsz": 160}}  # saved beside the weights, as a training run would
    model.save(str(path))
    return path


def test_models_register_records_external_lineage_and_gate_uses_it(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    run("import", str(write_yolo_dataset(tmp_path / "t", range(4))), "--split", "train", "-w", ws)
    run("import", str(write_yolo_dataset(tmp_path / "h", range(900, 903))), "--split", "holdout", "-w", ws)
    a, b, c = (scene_model(tmp_path / f"{n}.pt", seed) for n, seed in (("a", 1), ("b", 2), ("c", 3)))

    code, out, err = run("models", "register", str(a), "--note", "cloud job 17", "-w", ws, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["new"], first["origin"], first["parent"], first["note"], first["status"], first["imgsz"]) == (
        True, "external", None, "cloud job 17", "candidate", 160)
    code, out, err = run("models", "register", str(b), "--parent", first["id"], "-w", ws, "--json")
    assert code == 0, err
    second = json.loads(out)
    assert (second["parent"], second["origin"], second["note"]) == (first["id"], "external", None)
    again = json.loads(run("models", "register", str(a), "-w", ws, "--json")[1])
    assert again["id"] == first["id"] and again["new"] is False

    # `models` alone lists the registry as it always has.
    listed = json.loads(run("models", "-w", ws, "--json")[1])
    assert [(m["id"], m["parent"]) for m in listed] == [(first["id"], None), (second["id"], first["id"])]
    assert all(set(m) == {"id", "parent", "dataset_version", "status", "map50_95"} for m in listed)
    code, table, _ = run("models", "-w", ws)
    assert code == 0 and first["id"] in table and second["id"] in table

    # A .pt given to the gate comes in through the same registration: external, the file's imgsz.
    code, out, err = run("gate", str(c), "-w", ws, "--json")
    assert code == 0, err
    verdict = json.loads(out)
    assert verdict["promoted"] is True and (verdict["margin"], verdict["tolerance"]) == (0.005, 0.02)
    gated = json.loads(run("models", "register", str(c), "-w", ws, "--json")[1])
    assert (gated["id"], gated["new"], gated["origin"], gated["status"], gated["imgsz"]) == (
        verdict["challenger"], False, "external", "champion", 160)


def test_models_register_errors_name_the_bad_value(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    run("import", str(write_yolo_dataset(tmp_path / "t", range(2))), "--split", "train", "-w", ws)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    good = scene_model(tmp_path / "good.pt", 1)
    crate = ["helmet", "no_helmet", "vest", "crate"]
    other = scene_model(tmp_path / "other.pt", 1, names=crate)
    for args, named in [
        ((str(tmp_path / "absent.pt"),), "absent.pt: no such file"),
        ((str(onnx),), "model.onnx: not a .pt file"),
        ((str(good), "--parent", "m-nosuchmodel"), "parent 'm-nosuchmodel': no such model"),
        ((str(other),), f"its classes {crate} are not the catalog's {list(CLASSES)}"),
    ]:
        code, out, err = run("models", "register", *args, "-w", ws, "--json")
        assert code == 2 and out == "" and named in " ".join(err.split()), err
    code, _, err = run("gate", str(other), "-w", ws)
    assert code == 2 and f"are not the catalog's {list(CLASSES)}" in " ".join(err.split())
    assert json.loads(run("models", "-w", ws, "--json")[1]) == []


def test_train_on_vertex_ai_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`train --backend vertex` against the local Vertex REST stub; file:// folders stand in for the buckets."""
    from tests.feedback.training.vertex_stub import FAILED, PENDING, RUNNING, SUCCEEDED, VertexStub, writes_weights

    ws = str(tmp_path / "ws")
    for key, value in {"STORAGE_URL": (tmp_path / "bucket").as_uri(), "VERTEX_PROJECT": "edge-proj",
                       "VERTEX_STAGING_BUCKET": (tmp_path / "staging").as_uri(), "VERTEX_TOKEN": "t",
                       "VERTEX_POLL_S": "0"}.items():
        monkeypatch.setenv(f"EDGELOOP_{key}", value)
    run("import", str(write_yolo_dataset(tmp_path / "t", range(4))), "--split", "train", "-w", ws)
    run("import", str(write_yolo_dataset(tmp_path / "h", range(900, 902))), "--split", "holdout", "-w", ws)
    code, out, err = run("train", "--backend", "vertex", "-w", ws, "--json")
    assert code == 2 and out == "" and "EDGELOOP_VERTEX_IMAGE" in err
    monkeypatch.setenv("EDGELOOP_VERTEX_IMAGE", "europe-docker.pkg.dev/edge-proj/edgeloop/train:1")

    weights = scene_model(tmp_path / "job.pt", 4)
    with VertexStub([PENDING, RUNNING, SUCCEEDED], writes_weights(weights)) as stub:
        monkeypatch.setenv("EDGELOOP_VERTEX_API_ENDPOINT", stub.url)
        code, out, err = run("train", "--backend", "vertex", "--epochs", "3", "-w", ws, "--json")
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON line alone: the SDK's own chatter is kept off it
    [job] = stub.submitted
    assert (result["backend"], result["job"], result["dataset_version"], result["parent"]) == (
        "vertex", job.name, 1, None)
    assert "--epochs" not in job.job_spec.worker_pool_specs[0].container_spec.args  # it travels in --params
    [listed] = json.loads(run("models", "-w", ws, "--json")[1])
    assert (listed["id"], listed["dataset_version"], listed["status"]) == (result["model"], 1, "candidate")

    with VertexStub([PENDING, RUNNING, FAILED], error="OOM in workerpool0") as stub:
        monkeypatch.setenv("EDGELOOP_VERTEX_API_ENDPOINT", stub.url)
        code, out, err = run("train", "--backend", "vertex", "-w", ws, "--json")
    [job] = stub.submitted
    message = " ".join(err.split())
    assert code == 2 and out == "" and job.name in message and "JOB_STATE_FAILED: OOM in workerpool0" in message
    assert [m["id"] for m in json.loads(run("models", "-w", ws, "--json")[1])] == [result["model"]]


def test_import_refuses_bad_images_naming_them_unless_told_to_skip_them(tmp_path: Path) -> None:
    from store.settings import Settings, Workspace

    data = write_yolo_dataset(tmp_path / "d", range(4))
    truncated = sorted((data / "images").glob("*.jpg"))[0]
    truncated.write_bytes(truncated.read_bytes()[:2000])  # `edgeloop upload` refuses it: 422 undecodable_image
    text = data / "images" / "notes.jpg"
    text.write_text("not an image")
    ws = tmp_path / "ws"

    code, out, err = run("import", str(data), "--split", "train", "-w", str(ws))
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("error: 2 of 5 images cannot be imported, so nothing was: ")
    assert f"{text}: not a JPEG or PNG image" in line
    assert f"{truncated}: image is not a decodable image/jpeg: Premature end of JPEG file" in line
    assert line.endswith("(fix or remove them, or pass --skip-bad to import the rest)")
    with Workspace(Settings(workspace=ws)).catalog.connect() as con:  # nothing of the lot was written
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (0,)

    code, out, err = run("import", str(data), "--split", "train", "--skip-bad", "-w", str(ws), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == report["labels_added"] == 3
    assert sorted(report["skipped"]) == sorted([f"{text}: not a JPEG or PNG image",
                                                f"{truncated}: image is not a decodable image/jpeg: Premature end "
                                                "of JPEG file"])
    assert sorted(err.splitlines()) == sorted(f"skipped {s}" for s in report["skipped"])
