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
from store.clusters import Cluster, Prompt, save_clusters, save_prompts
from store.models import register_model
from store.settings import Settings, Workspace

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def champion_site(tmp_path: Path, scene_pt: Path, train: int, holdout: range = range(0)) -> Workspace:
    """A workspace with `train` generated training images (helmets and bare heads only), `holdout` scenes, and
    the scene model registered as the champion that synthesis labels with."""
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "train", range(train), class_weights=(0.6, 0.4, 0, 0)), "train",
                progress=False)
    if holdout:
        import_yolo(ws, write_yolo_dataset(tmp_path / "holdout", holdout), "holdout", progress=False)
    data = scene_pt.read_bytes()
    ws.blobs.put(data)
    with ws.catalog.connect() as con:
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?",
                    [register_model(con, sha256_hex(data), classes=list(CLASSES), imgsz=160)])
    return ws


def test_synthesize_for_a_class_then_report(tmp_path: Path, scene_pt: Path):
    champion_site(tmp_path, scene_pt, 10, holdout=range(50, 53))
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


def test_synthesize_for_mined_clusters(tmp_path: Path, scene_pt: Path):
    ws = champion_site(tmp_path, scene_pt, 8)
    dark = {"bins": {"lighting": {"value": "dark", "share": 0.9, "fixed": True}}, "medians": {},
            "neighbour": {"class_id": CLASSES.index("helmet")}}
    with ws.catalog.connect() as con:
        save_clusters(con, None, [Cluster("c-dark", None, CLASSES.index("no_helmet"), "missed", False, 4, "emb",
                                          dark, [], {})])
        save_prompts(con, [Prompt("p1", "c-dark", 0, 0, CLASSES.index("no_helmet"), CLASSES.index("helmet"),
                                  "a bare head at night", "cartoon", "remove the hard hat", "w1", {})])
    w = ["-w", str(tmp_path / "ws")]
    code, out, err = run("synthesize", "--cluster", "c-dark", "--n", "2", "--json", *w)
    assert code == 0, err
    made = json.loads(out)
    assert made["cluster_id"] == "c-dark" and made["kept"] + sum(made["rejected"].values()) == 2
    with ws.catalog.connect() as con:
        lineage = [json.loads(x) for (x,) in con.execute(
            "SELECT lineage FROM images WHERE origin = 'synthetic'").fetchall()]
    assert lineage and all(x["cluster_id"] == "c-dark" and x["edit_instruction"] == "remove the hard hat"
                           and x["prompt"] == "a bare head at night" for x in lineage)
    assert all(0.35 <= e["brightness_factor"] <= 0.65 for x in lineage for e in x["edits"])  # the cluster is dark
    code, out, err = run("synthesize", "--all", "--n", "1", "--seed", "5", "--json", *w)
    assert code == 0, err
    assert [r["cluster_id"] for r in json.loads(out)["runs"]] == ["c-dark"]


def test_a_generator_that_needs_prompts_names_the_command_that_writes_them(tmp_path: Path, scene_pt: Path):
    ws = champion_site(tmp_path, scene_pt, 8)
    with ws.catalog.connect() as con:
        save_clusters(con, None, [Cluster("c-dark", None, CLASSES.index("no_helmet"), "missed", False, 4, "emb",
                                          {"bins": {}, "medians": {}}, [], {})])  # clustered, no prompts yet
    w = ["-w", str(tmp_path / "ws")]
    code, out, err = run("synthesize", "--all", "--n", "1", "--generator", "gemini-edit", *w)
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: --generator gemini-edit needs an edit instruction for cluster c-dark, "
                                "which has none yet: run `edgeloop prompts` first"]
    code, _, err = run("synthesize", "--class", "no_helmet", "--n", "1", "--generator", "imagen", *w)
    assert code == 2 and err.splitlines() == [
        "error: --generator imagen needs a prompt, written per failure cluster: run `edgeloop clusters` and "
        "`edgeloop prompts`, then synthesize with --cluster ID or --all"]

    # The table of runs names the class, not its index.
    result = runner.invoke(app, ["synthesize", "--class", "no_helmet", "--n", "1", *w], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "no_helmet" in result.stdout and f"class {CLASSES.index('no_helmet')}" not in result.stdout
