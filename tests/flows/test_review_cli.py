"""`edgeloop review push/pull` and `failures` through the CLI, with the oracle as the annotators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from flows.cli import app
from store.inbox import load_inbox
from store.settings import Settings, Workspace
from tests.flows.camera_inbox import camera_frames

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _camera(ws: Workspace, labels: Path, n: int) -> None:
    """n captures of frames of `cam.mp4`, each with one spurious detection; ground truth beside; loaded."""
    camera_frames(ws, labels, n, first_seed=300, box=(1, 1, 9, 9))
    load_inbox(ws.catalog, ws.inbox)


def test_push_pull_with_the_oracle_then_failures(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 6)
    w = ["-w", str(tmp_path / "ws")]

    code, _, err = run("review", "push", "--budget", "4", "--reviewer", "oracle", *w)
    assert code == 2 and "--labels" in err
    code, out, err = run("review", "push", "--budget", "4", "--reviewer", "oracle", "--labels",
                         str(tmp_path / "labels"), "--json", *w)
    assert code == 0, err
    assert json.loads(out)["pushed"] == 4
    code, out, err = run("review", "pull", "--reviewer", "oracle", "--labels", str(tmp_path / "labels"), "--json", *w)
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["verified"] == 4 and pulled["failures"] >= 4  # at least the spurious box on each
    again = json.loads(run("review", "pull", "--reviewer", "oracle", "--labels", str(tmp_path / "labels"),
                           "--json", *w)[1])
    assert again["verified"] == 0 and again["unchanged"] == 4
    summary = json.loads(run("failures", "--json", *w)[1])
    assert summary["totals"]["spurious"] == 4 and summary["totals"]["captures"] == 4
    # The random baseline takes what is left; active selection computed embeddings on the way.
    assert json.loads(run("review", "push", "--budget", "9", "--strategy", "random", "--reviewer", "oracle",
                          "--labels", str(tmp_path / "labels"), "--json", *w)[1])["pushed"] == 2
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM embeddings WHERE kind = 'capture'").fetchone() == (6,)


def test_label_studio_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 2)
    code, _, err = run("review", "push", "--budget", "2", "--no-diversity", "--public-url", "http://127.0.0.1:9",
                       "--label-studio-url", "http://127.0.0.1:9", "--label-studio-token", "x" * 40,
                       "-w", str(tmp_path / "ws"))
    assert code == 2 and "127.0.0.1:9" in err
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM review_tasks").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)  # known before the embedding


NO_LABEL_STUDIO = {"EDGELOOP_LABEL_STUDIO_URL": None, "EDGELOOP_LABEL_STUDIO_TOKEN": None, "EDGELOOP_WORKSPACE": None}


def test_push_without_label_studio_says_so_in_one_line_before_embedding(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 2)
    result = runner.invoke(app, ["review", "push", "--budget", "2", "--explain", "-w", str(tmp_path / "ws")],
                           env=NO_LABEL_STUDIO)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "error: Label Studio is not configured: set EDGELOOP_LABEL_STUDIO_URL and EDGELOOP_LABEL_STUDIO_TOKEN "
        "(or label_studio_url and label_studio_token in edgeloop.toml)"]
    with ws.catalog.connect() as con:  # said before the embedding, which is the push's slow part
        assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)


def test_pull_before_any_push_says_so_and_leaves_no_workspace(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels").mkdir()
    result = runner.invoke(app, ["review", "pull", "--reviewer", "oracle", "--labels", "labels"], env=NO_LABEL_STUDIO)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "nothing was pushed to oracle for review yet: run `edgeloop review push --budget N` first"]
    assert result.stdout == ""
    assert not (tmp_path / ".edgeloop").exists()  # a command that only read creates no workspace

    # A workspace with captures but no review tasks: the same line, and --json still gives the counts.
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    _camera(ws, tmp_path / "truth", 1)
    result = runner.invoke(app, ["review", "pull", "--reviewer", "oracle", "--labels", "labels", "--json",
                                 "-w", "ws"], env=NO_LABEL_STUDIO)
    assert result.exit_code == 0 and "nothing was pushed" in result.stderr
    assert json.loads(result.stdout)["tasks"] == 0


def test_pull_from_an_unreachable_label_studio_fails_naming_it(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["review", "pull", "--label-studio-url", "http://127.0.0.1:9",
                                 "--label-studio-token", "x" * 40], env=NO_LABEL_STUDIO)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: Label Studio at http://127.0.0.1:9 is unreachable")
    assert not (tmp_path / ".edgeloop").exists()


def test_push_and_pull_say_what_they_did_in_a_line_not_a_dict(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 2)
    oracle = ["--reviewer", "oracle", "--labels", str(tmp_path / "labels"), "-w", str(tmp_path / "ws")]
    code, out, err = run("review", "push", "--budget", "2", "--strategy", "random", *oracle)
    assert code == 0, err
    assert out.splitlines() == ["pushed 2 captures to oracle (random); 0 picked were already pushed"]
    code, out, err = run("review", "pull", *oracle)
    assert code == 0, err
    [line] = out.splitlines()
    assert line.startswith("pulled 2 verified (") and line.endswith("; 0 of 2 tasks still pending")


def test_push_explain_shows_each_picks_score_parts_as_stored(tmp_path: Path) -> None:
    """`--explain` adds every pick's score parts (a table, or `picks` with --json); they are the parts the
    catalog stored with the task, and each score follows from them (diversity x (EPS + weighted priority))."""
    from feedback.review.selection import EPS, WEIGHTS

    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 5)
    oracle = ["--reviewer", "oracle", "--labels", str(tmp_path / "labels"), "-w", str(tmp_path / "ws")]

    code, out, err = run("review", "push", "--budget", "1", "--json", *oracle)
    assert code == 0, err
    assert "picks" not in json.loads(out)  # only asked for
    code, out, err = run("review", "push", "--budget", "2", "--explain", "--json", *oracle)
    assert code == 0, err
    picks = json.loads(out)["picks"]
    assert len(picks) == 2 == json.loads(out)["pushed"]
    with ws.catalog.connect() as con:
        stored = {c: (s, json.loads(p)) for c, s, p in con.execute(
            "SELECT capture_id, score, score_parts FROM review_tasks").fetchall()}
    for pick in picks:
        score, parts = stored[pick["capture"]]
        assert pick["parts"] == {k: round(v, 4) for k, v in parts.items()} and pick["score"] == round(score, 4)
        assert {"uncertainty", "class_balance", "diversity"} <= set(parts)
        priority = sum(WEIGHTS[k] * v for k, v in parts.items() if k in WEIGHTS)
        assert score == pytest.approx(parts["diversity"] * (EPS + priority), rel=1e-4, abs=1e-6)
    assert parts["uncertainty"] > 0  # every capture has a 0.4-confidence detection and a trigger

    code, out, err = run("review", "push", "--budget", "2", "--explain", "--no-diversity", *oracle)
    assert code == 0, err
    assert "why each capture was picked" in out and out.splitlines()[-1].startswith("pushed 2 captures")
    with ws.catalog.connect() as con:
        latest = con.execute("SELECT capture_id, score FROM review_tasks WHERE score_parts NOT LIKE '%diversity%'"
                             ).fetchall()
    assert len(latest) == 2
    for capture, score in latest:  # one table row per pick: its id's prefix and its score
        row = next(line for line in out.splitlines() if capture[:6] in line)  # rich shortens it to fit 80 columns
        assert f"{score:.3f}" in row


def test_push_to_a_workspace_without_imported_labels_takes_the_models_classes(tmp_path: Path,
                                                                              scene_pt: Path) -> None:
    """No data set was imported: the review project's class list is the registered model's, adopted into
    the catalog, and the verified labels are stored in those classes."""
    from feedback.scenes import CLASSES
    from store.blobs import sha256_hex
    from store.labels import catalog_classes
    from store.models import register_model

    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    _camera(ws, tmp_path / "labels", 3)
    oracle = ["--reviewer", "oracle", "--labels", str(tmp_path / "labels"), "-w", str(tmp_path / "ws")]
    code, _, err = run("review", "push", "--budget", "2", "--strategy", "random", *oracle)
    assert code != 0 and "no class list yet" in err  # neither labels nor a model: nothing to label with
    with ws.catalog.connect() as con:
        assert catalog_classes(con) == [] and con.execute("SELECT count(*) FROM review_tasks").fetchone() == (0,)

    # The camera's model, champion, registered as a model trained elsewhere would be; and a newer candidate
    # for other classes, which the champion outranks.
    data = scene_pt.read_bytes()
    ws.blobs.put(data)
    with ws.catalog.connect() as con:
        champion = register_model(con, sha256_hex(data), classes=list(CLASSES), imgsz=160)
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [champion])
        register_model(con, "f" * 64, classes=["cat", "dog"], imgsz=160)
    code, out, err = run("review", "push", "--budget", "2", "--strategy", "random", "--json", *oracle)
    assert code == 0, err
    assert json.loads(out)["pushed"] == 2
    with ws.catalog.connect() as con:
        assert catalog_classes(con) == list(CLASSES)
    code, out, err = run("review", "pull", *oracle, "--json")
    assert code == 0, err
    assert json.loads(out)["verified"] == 2
    with ws.catalog.connect() as con:
        stored = {c for (c,) in con.execute("SELECT DISTINCT class_id FROM label_boxes").fetchall()}
    assert stored and stored <= set(range(len(CLASSES)))


def test_status_counts_people_s_time_per_class_from_the_pulls(tmp_path: Path) -> None:
    """`status` adds up what each pull stored: the same seconds `review pull --json` reported, per class."""
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 3)
    oracle = ["--reviewer", "oracle", "--labels", str(tmp_path / "labels"), "-w", str(tmp_path / "ws")]
    assert run("review", "push", "--budget", "3", "--strategy", "random", *oracle)[0] == 0
    code, out, err = run("review", "pull", "--json", *oracle)
    assert code == 0, err
    pulled = json.loads(out)
    code, out, err = run("status", "--json", "-w", str(tmp_path / "ws"))
    assert code == 0, err
    effort = json.loads(out)["review_effort"]
    assert pulled["verified"] == 3 and pulled["seconds"] > 0
    assert effort["tasks"] == 3 and effort["seconds"] == round(pulled["seconds"], 1)
    assert sum(row["boxes"] for row in effort["by_class"].values()) == pulled["boxes"]
    assert effort["by_class"] == pulled["effort_by_class"]
