"""`improvement_cycle` set up so that each verdict is known in advance, and checked from the catalog.

tests/flows/test_cycle.py accepts either outcome of synthesis and of the gate; here the site decides it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from flows.cycle import improvement_cycle
from store.settings import Settings, Workspace
from tests.flows.test_cycle import camera_frames

pytestmark = pytest.mark.usefixtures("prefect_api")


def _site(tmp_path: Path, champion: Path | None, captures: int) -> tuple[Workspace, Path]:
    """Base and holdout imported, `champion` (if any) registered as champion, camera frames in the inbox whose
    device saw only a spurious box: every real object in them is a verified miss once reviewed."""
    from feedback.training.gate_run import register_weights

    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "base", range(8)), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "holdout", range(100, 104)), "holdout", progress=False)
    if champion is not None:
        record, _ = register_weights(ws, champion)
        with ws.catalog.connect() as con:
            con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [record.id])
    return ws, camera_frames(ws, tmp_path / "labels", captures)


def _catalog(ws: Workspace, challenger: str) -> tuple[tuple, dict[str, str], int]:
    """The gate's recorded decision on `challenger`, every model's status, and the synthetic images kept."""
    with ws.catalog.connect() as con:
        [decision] = con.execute("SELECT promoted, champion_id, reasons, challenger_metrics, champion_metrics "
                                 "FROM gate_decisions WHERE challenger_id = ?", [challenger]).fetchall()
        status = dict(con.execute("SELECT id, status FROM models").fetchall())
        synthetic = con.execute("SELECT count(*) FROM images WHERE origin = 'synthetic'").fetchone()[0]
    return decision, status, synthetic


def test_a_challenger_no_better_than_the_champion_is_refused_and_not_published(tmp_path: Path,
                                                                                scene_pt: Path) -> None:
    """The champion is the scene model with random weights; one epoch at 64 px from it learns nothing the
    holdout can see (the premise, checked below): the gate must refuse, and nothing is published."""
    ws, labels = _site(tmp_path, scene_pt, captures=12)
    with ws.catalog.connect() as con:
        [(champion,)] = con.execute("SELECT id FROM models WHERE status = 'champion'").fetchall()
    summary = improvement_cycle(str(ws.settings.workspace), budget=12, reviewer="oracle", labels=str(labels),
                                holdout_share=0.0, epochs=1, imgsz=64)
    stages = {s["name"]: s for s in summary["stages"]}
    challenger = stages["retrain"]["result"]["trained"]["model"]
    (promoted, judged_against, reasons, new, old), status, _ = _catalog(ws, challenger)
    assert judged_against == champion
    assert json.loads(new)["map50_95"] - json.loads(old)["map50_95"] < 0.005  # the premise: no gain of the margin
    assert promoted is False and stages["retrain"]["result"]["gate"]["promoted"] is False
    assert json.loads(reasons)[0].endswith("needs >= +0.0050): fail")
    assert status[champion] == "champion" and status[challenger] != "champion"
    assert stages["publish"]["status"] == "skipped"
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM rollouts").fetchone() == (0,)
    data = json.loads((Path(summary["report_html"]).parent / "report_data.json").read_text())
    assert data["verdict"]["state"] == "refused"


def test_a_site_with_no_champion_gets_one_and_synthesis_keeps_images_for_its_misses(tmp_path: Path) -> None:
    """No model was registered: the cycle's challenger (trained from scratch) must be promoted, whatever it
    scores, and published. Every reviewed frame holds objects the device missed, so mining finds blind spots
    of missed objects and the swap generator must keep images for them, stored as synthetic training images."""
    ws, labels = _site(tmp_path, None, captures=12)
    summary = improvement_cycle(str(ws.settings.workspace), budget=12, reviewer="oracle", labels=str(labels),
                                holdout_share=0.0, epochs=1, imgsz=64, synthetic_count=8)
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["review pull"]["result"]["verified"] == 12
    with ws.catalog.connect() as con:  # the premise of synthesis: blind spots of missed objects were mined
        missed = con.execute("SELECT count(*) FROM failures WHERE kind = 'missed'").fetchone()[0]
    assert missed >= 12 and stages["mine"]["status"] == "done"
    synth = stages["synthesize"]["result"]
    assert synth["generator"] == "swap" and synth["clusters"] >= 1 and synth["kept"] > 0, synth

    trained = stages["retrain"]["result"]["trained"]
    assert trained["parent"] is None  # from scratch: there was no champion to fine-tune
    (promoted, champion, reasons, _, old), status, synthetic = _catalog(ws, trained["model"])
    assert synthetic == synth["kept"]  # the kept images are in the catalog as synthetic ones
    assert promoted is True and champion is None and old is None
    assert json.loads(reasons) == ["no champion yet: the first model is promoted"]
    assert status == {trained["model"]: "champion"}
    assert stages["publish"]["status"] == "done" and stages["publish"]["result"]["model"] == trained["model"]
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM rollouts").fetchone()[0] == 1
    data = json.loads((Path(summary["report_html"]).parent / "report_data.json").read_text())
    assert data["verdict"]["state"] == "promoted"
