"""`improvement_cycle` under a real (ephemeral) Prefect API: every stage runs once, then a rerun skips cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from feedback.review.stage import Selection
from flows.cycle import improvement_cycle, stage_status
from flows.publish import publish_flow
from flows.review import review_pull_flow, review_push_flow
from store.settings import Settings, Workspace
from tests.flows.camera_inbox import camera_frames
from tests.flows.test_review_cli import _camera

pytestmark = pytest.mark.usefixtures("prefect_api")


def _site(tmp_path: Path, scene_pt: Path) -> tuple[Workspace, Path]:
    """Base and holdout imported, the random scene model champion, 12 camera frames in the inbox."""
    from feedback.training.gate_run import register_weights

    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "base", range(10)), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "holdout", range(100, 106)), "holdout", progress=False)
    record, _ = register_weights(ws, scene_pt)
    with ws.catalog.connect() as con:
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [record.id])
    return ws, camera_frames(ws, tmp_path / "labels", 12)


def test_a_cycle_runs_every_stage_then_a_rerun_skips(tmp_path: Path, scene_pt: Path) -> None:
    ws, labels = _site(tmp_path, scene_pt)
    seen: list[tuple[str, str]] = []
    first = improvement_cycle(str(ws.settings.workspace), budget=6, reviewer="oracle", labels=str(labels),
                              holdout_share=0.0, epochs=1, imgsz=64, on_stage=lambda s, state, _: seen.append((s, state)))
    stages = {s["name"]: s for s in first["stages"]}
    started = [name for name, state in seen if state == "start"]
    assert [s["name"] for s in first["stages"]] + ["report"] == started
    assert stages["ingest"]["result"]["captures_added"] == 12
    assert stages["review push"]["result"]["pushed"] == 6
    assert stages["review pull"]["result"]["verified"] == 6
    failures = stages["review pull"]["result"]["failures"]
    assert failures > 0 and stages["mine"]["result"]["new_failures"] == failures
    synth = stages["synthesize"]["result"]
    if not synth.get("skipped"):
        # Every cluster asked for images gave an outcome: kept, rejected with a reason, or a named failure.
        assert synth["generator"] == "swap" and synth["clusters"] >= 1
        assert synth["kept"] + synth["rejected"] + len(synth["failed"]) > 0
    else:
        assert synth["skipped"] == "no failure cluster of missed or confused objects"
    trained = stages["retrain"]["result"]
    assert trained["trained"]["parent"] is not None and trained["gate"]["challenger"] == trained["trained"]["model"]
    report = json.loads(Path(first["report"]).read_text())
    assert report["cycle"] == first["cycle"] and len(report["stages"]) == len(first["stages"])
    data = json.loads((Path(first["report_html"]).parent / "report_data.json").read_text())
    assert data["verdict"]["state"] == ("promoted" if trained["gate"]["promoted"] else "refused")
    assert "<html" in Path(first["report_html"]).read_text()
    if not trained["gate"]["promoted"]:
        assert stages["publish"]["status"] == "skipped"
    # Publishing the champion by hand: an artifact, and a canary rollout of it.
    published = publish_flow(str(ws.settings.workspace), canary_pct=50.0)
    with ws.catalog.connect() as con:
        champion_id = con.execute("SELECT id FROM models WHERE status = 'champion'").fetchall()[0][0]
    assert published["model"] == champion_id and published["state"] == "canary" and published["canary_pct"] == 50.0

    second = improvement_cycle(str(ws.settings.workspace), budget=6, reviewer="oracle", labels=str(labels),
                               holdout_share=0.0, epochs=1, imgsz=64)
    again = {s["name"]: s for s in second["stages"]}
    assert again["ingest"]["status"] == "skipped"  # nothing new arrived
    # Six captures were still waiting: they are reviewed, and the new labels are trained on.
    assert again["review push"]["result"]["pushed"] == 6 and again["review pull"]["result"]["verified"] == 6
    assert again["retrain"]["result"]["dataset_version"] > trained["dataset_version"]
    third = improvement_cycle(str(ws.settings.workspace), budget=6, reviewer="oracle", labels=str(labels),
                              holdout_share=0.0, epochs=1, imgsz=64)
    assert {s["name"]: s["status"] for s in third["stages"]} == {
        "ingest": "skipped", "review push": "skipped", "review pull": "skipped", "mine": "skipped",
        "synthesize": "skipped", "retrain": "skipped", "publish": "skipped"}


def test_the_cycle_report_follows_the_watched_class_and_counts_review_time(tmp_path: Path, scene_pt: Path) -> None:
    """The watch_classes a cycle is given reach its report: the headline tells the watched class first, with the
    gate's numbers for it, and the review's effort is the cycle's people cost."""
    ws, labels = _site(tmp_path, scene_pt)
    summary = improvement_cycle(str(ws.settings.workspace), budget=6, reviewer="oracle", labels=str(labels),
                                holdout_share=0.0, epochs=1, imgsz=64, watch_classes=["vest"])
    assert summary["watch_classes"] == ["vest"]
    assert json.loads(Path(summary["report"]).read_text())["watch_classes"] == ["vest"]
    data = json.loads((Path(summary["report_html"]).parent / "report_data.json").read_text())
    story = data["rare"][0]
    assert story["class"] == "vest" and story["why"].startswith("watched")
    gate = next(s for s in summary["stages"] if s["name"] == "retrain")["result"]["gate"]
    assert story["metrics"]["recall"]["challenger"] == gate["challenger_metrics"]["per_class"]["vest"]["recall"]
    pull = next(s for s in summary["stages"] if s["name"] == "review pull")["result"]
    assert data["effort"]["captures"] == pull["verified"] == 6 and data["people_s"] == data["effort"]["seconds"] > 0


def test_a_pull_in_which_people_skipped_a_task_is_a_stage_done(tmp_path: Path) -> None:
    """Review pull's result counts skipped tasks under `skipped`; only a `Skipped` reason makes a skipped stage."""
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    labels = tmp_path / "labels"
    _camera(ws, labels, 3)
    where = str(ws.settings.workspace)
    assert review_push_flow(where, budget=3, reviewer="oracle", labels=str(labels),
                            selection=Selection(strategy="random"))["pushed"] == 3
    next(iter(sorted(labels.glob("*.txt")))).unlink()  # the oracle has no answer for one frame: it skips it
    pulled = review_pull_flow(where, "oracle", str(labels), 0.0)
    assert (pulled["verified"], pulled["skipped"]) == (2, 1) and stage_status(pulled) == "done"
    again = review_pull_flow(where, "oracle", str(labels), 0.0)
    assert again == {"skipped": "no review task is open"} and stage_status(again) == "skipped"
