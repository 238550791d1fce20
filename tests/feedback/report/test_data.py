"""The report's data, built from a real cycle's summary and catalog, and from real evaluations with known mistakes."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from feedback.report.data import cycle_report_data
from feedback.report.mistakes import WORST
from feedback.report.stages import NOT_RUN
from feedback.report.synthesis import SAMPLES
from feedback.scenes import CLASSES
from store.clusters import read_clusters, read_prompts
from store.settings import Workspace

Site = tuple[Workspace, dict[str, Any], Path]


def _stage(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["stages"] if s["name"] == name)


def _image(cycle_dir: Path, relative: str) -> np.ndarray:
    image = cv2.imread(str(cycle_dir / relative))
    assert image is not None, relative
    return image


def test_a_real_cycle_verdict_selection_lineage_and_stages(cycle: Site) -> None:
    ws, summary, cycle_dir = cycle
    data = cycle_report_data(ws, summary, cycle_dir)
    json.dumps(data, default=str)  # the JSON written beside the HTML

    retrain = _stage(summary, "retrain")["result"]
    gate = retrain["gate"]
    assert data["verdict"]["state"] == ("promoted" if gate["promoted"] else "refused")
    assert gate["challenger"] in data["verdict"]["title"] and data["verdict"]["reasons"] == gate["reasons"]
    assert data["verdict"]["holdout_images"] == gate["challenger_metrics"]["images"]
    for m in data["headline"]:
        new, old = gate["challenger_metrics"][m["key"]], gate["champion_metrics"][m["key"]]
        assert (m["challenger"], m["champion"], m["has_champion"]) == (new, old, True)
        assert m["delta"] == (None if new is None or old is None else pytest.approx(new - old))
    assert [c["class"] for c in data["per_class"]] == list(CLASSES)

    # Selection: this cycle's picks in pick order, with the parts recorded on their review tasks.
    push = _stage(summary, "review push")["result"]
    picks = data["selection"]["picks"]
    assert [p["capture"] for p in picks] == [p["capture"] for p in push["picks"]][:len(picks)] and len(picks) == 6
    with ws.catalog.connect() as con:
        recorded = {c: json.loads(parts) for c, parts in con.execute(
            "SELECT capture_id, score_parts FROM review_tasks").fetchall()}
    for pick, pushed in zip(picks, push["picks"], strict=False):
        assert pick["parts"] == recorded[pick["capture"]]
        assert pick["parts"] == pytest.approx(pushed["parts"], abs=1e-4)
        assert pick["status"] == "verified" and pick["why"]
        assert _image(cycle_dir, pick["image"]).shape[1] <= 180
    # Every failure review pull recorded came from these six captures.
    assert sum(sum(p["failures"].values()) for p in picks) == _stage(summary, "review pull")["result"]["failures"]

    # Lineage: the challenger, fine-tuned from the champion, on the version the retrain stage froze.
    lineage = data["lineage"]
    assert [m["id"] for m in lineage["chain"]] == [gate["challenger"], gate["champion"]]
    assert lineage["chain"][1]["status"] == ("retired" if gate["promoted"] else "champion")
    assert lineage["training"]["dataset_version"] == lineage["dataset"]["version"] == retrain["dataset_version"]
    assert lineage["training"]["params"]["epochs"] == 1 and lineage["training"]["params"]["imgsz"] == 64
    assert lineage["dataset"]["train"] > 0 and lineage["dataset"]["holdout"] == gate["challenger_metrics"]["images"]

    # Stages as they ran, and what the report says of those the cycle did not run.
    assert [(s["name"], s["status"], s["seconds"]) for s in data["stages"]] == \
        [(s["name"], s["status"], s["seconds"]) for s in summary["stages"]]
    story = {x["stage"]: x["text"] for x in data["story"]}
    assert list(story) == [s["name"] for s in summary["stages"]] and story["ingest"] == "12 captures in"
    assert story["review pull"] == f"6 reviewed, {_stage(summary, 'review pull')['result']['failures']} failures found"
    assert story["retrain"].endswith(data["verdict"]["state"])
    assert data["stages_s"] == pytest.approx(sum(s["seconds"] for s in summary["stages"]))
    wall = datetime.fromisoformat(summary["finished_at"]) - datetime.fromisoformat(summary["started_at"])
    assert data["wall_s"] == pytest.approx(wall.total_seconds(), abs=0.05)
    assert data["wall_s"] >= data["stages_s"] - 0.05 * len(data["stages"])  # each stage's time is rounded
    costs = [s["result"]["cost_usd"] for s in summary["stages"] if "cost_usd" in s["result"]]
    assert data["cost_usd"] == (sum(costs) if costs else None)  # None: no stage reported a cost
    for name in ("mine", "synthesize"):  # the later stages' notes, whether the cycle has them yet or not
        ran = next((s for s in summary["stages"] if s["name"] == name), None)
        assert data["mining"][name] == (NOT_RUN if ran is None else ran["result"].get("skipped"))
    publish = next((s for s in summary["stages"] if s["name"] == "publish"), None)  # skipped: nothing promoted
    assert data["rollout"]["publish"] == (publish["result"]["skipped"] if publish else NOT_RUN)
    assert data["rollout"]["status"] == "nothing published yet"

    # The challenger's missed boxes, as crops of the holdout frames.
    mistakes = json.loads((cycle_dir / "evaluation" / "challenger" / "mistakes.json").read_text())
    shown = data["mistakes"]["false_negatives"]
    assert len(shown) == min(WORST, len(mistakes["false_negatives"])) > 0
    assert [m["image_id"] for m in shown] == [m["image_id"] for m in mistakes["false_negatives"][:WORST]]
    assert all(max(_image(cycle_dir, m["image"]).shape[:2]) == 160 for m in shown)


def test_regressions_curves_and_mistakes_from_known_predictions(judged: Site) -> None:
    ws, summary, cycle_dir = judged
    data = cycle_report_data(ws, summary, cycle_dir)
    gate = _stage(summary, "retrain")["result"]["gate"]

    assert data["verdict"]["state"] == "refused" and not gate["promoted"]
    rows = {r["class"]: r for r in data["per_class"]}
    assert rows["vest"]["regressed"] and rows["vest"]["ap50"]["delta"] < -gate["tolerance"]
    # Every class's flag follows the gate's rule (the planted false alarms cost helmet some AP as well).
    for name, row in rows.items():
        theirs, ours = gate["champion_metrics"]["per_class"][name]["map50"], row["ap50"]["challenger"]
        assert row["regressed"] == (theirs is not None and theirs - (ours or 0.0) > gate["tolerance"])
    assert rows["no_helmet"]["instances"] == gate["challenger_metrics"]["per_class"]["no_helmet"]["instances"]

    curves = {c["class"]: c for c in data["curves"]["classes"]}
    written = json.loads((cycle_dir / "evaluation" / "challenger" / "pr_curves.json").read_text())
    for name, curve in curves.items():
        for role in ("challenger", "champion"):
            points, ap = curve[role]["points"], curve[role]["ap50"]
            if ap is None:
                assert points is None
                continue
            # The points are the written curve up to the highest recall reached; the rest were zeros.
            padded = [p for _, p in points] + [0.0] * (101 - len(points))
            assert np.mean(padded) == pytest.approx(ap, abs=1e-4)
    champion_vest = curves["vest"]["champion"]["points"]
    assert champion_vest[-1] == [1.0, 1.0] and len(champion_vest) == 101  # every vest found, nothing false
    challenger_vest = curves["vest"]["challenger"]["points"]
    assert challenger_vest[-1][0] < 0.6  # half the vests are never found
    assert [p for _, p in challenger_vest] == written["precision"]["vest"][:len(challenger_vest)]
    assert curves["vest"]["challenger"]["operating_point"] == [rows["vest"]["recall"]["challenger"],
                                                             rows["vest"]["precision"]["challenger"]]

    # The false alarm planted on every frame is the worst false positive, drawn on its frame.
    fps = data["mistakes"]["false_positives"]
    assert len(fps) == WORST and all(m["class"] == "helmet" and m["score"] == pytest.approx(0.97) for m in fps)
    assert all(m["against"] for m in fps)
    crop = _image(cycle_dir, fps[0]["image"])
    assert max(crop.shape[:2]) == 160
    assert data["confusion"]["challenger"]["matrix"] == gate["challenger_metrics"]["confusion_matrix"]["matrix"]
    # No catalog rows for these ids: the lineage says what it knows, nothing more.
    assert data["lineage"]["model"] == "m-challenger" and data["lineage"]["chain"] == []
    assert data["selection"]["status"] == NOT_RUN


def test_mining_synthesis_and_rollout_of_the_later_stages(later_stages: Site) -> None:
    ws, summary, cycle_dir = later_stages
    data = cycle_report_data(ws, summary, cycle_dir)
    rollout = data["rollout"]
    challenger = _stage(summary, "publish")["result"]["model"]
    assert rollout["status"] is None and rollout["publish"] is None  # the publish stage ran
    [artifact] = rollout["artifacts"]
    assert artifact["model"] == challenger and artifact["onnx_bytes"] > 0
    assert artifact["parity"]["frames"] > 0 and artifact["parity"]["max_box_px"] <= artifact["parity"]["box_tol_px"]
    assert rollout["rollout"]["model"] == challenger and rollout["rollout"]["state"] == "canary"
    assert rollout["rollout"]["canary_pct"] == 10.0
    assert [e["action"] for e in rollout["events"]] == ["start"]
    # No device has sent a heartbeat yet: the canary cannot be judged healthy.
    assert rollout["judgment"]["healthy"] is False
    devices = {d["device"]: d for d in rollout["devices"]}
    assert sorted(devices) == ["dock-cam-1", "gate-cam-2"]
    for device in devices.values():  # in the canary by its bucket, or on the fleet's model (none yet)
        assert device["desired"] == (challenger if device["bucket"] < 10.0 else None)
    json.dumps(data, default=str)

    # Mining: every cluster it found (noise aside), each with medoid crops, its prompts and its synthesis runs.
    mining = data["mining"]
    assert mining["mine"] is None and mining["synthesize"] is None  # both stages ran
    with ws.catalog.connect() as con:
        found = {c.id: c for c in read_clusters(con) if not c.noise}
        prompts = {cid: {p.prompt for p in read_prompts(con, cid)} for cid in found}
        runs = {r[0]: r[1:] for r in con.execute(
            "SELECT id, cluster_id, generator, target_class, n_kept, n_rejected FROM synthesis_runs").fetchall()}
        reasons = {rid: dict(con.execute("SELECT reason, count(*) FROM synthesis_outcomes WHERE run_id = ? "
                                         "AND NOT kept GROUP BY reason", [rid]).fetchall()) for rid in runs}
    assert found and {c["id"] for c in mining["clusters"]} == set(found)
    for cluster in mining["clusters"]:
        assert cluster["size"] == found[cluster["id"]].size and cluster["class"] == found[cluster["id"]].class_name
        assert [m["failure"] for m in cluster["medoids"]] == found[cluster["id"]].medoids[:3]
        assert all(_image(cycle_dir, m["image"]).size for m in cluster["medoids"])
        assert cluster["prompts"] and {p["prompt"] for p in cluster["prompts"]} <= prompts[cluster["id"]]
        assert all(run["cluster_id"] == cluster["id"] for run in cluster["runs"])
        # Lineage runs through: the cluster's kept images were asked for with one of its prompts.
        assert {s["prompt"] for run in cluster["runs"] for s in run["kept_samples"]} <= prompts[cluster["id"]]
    # Every synthesis run, under its cluster or as a run for a class, with its counts, reasons and a few kept
    # and rejected images with the filters' scores.
    shown = [run for c in mining["clusters"] for run in c["runs"]] + mining["runs_without_cluster"]
    assert sorted(run["id"] for run in shown) == sorted(runs)
    assert any(run["cluster_id"] for run in shown) and mining["runs_without_cluster"]
    for run in shown:
        cluster_id, generator, target, kept, rejected = runs[run["id"]]
        assert (run["cluster_id"], run["generator"], run["target"]) == (cluster_id, generator, CLASSES[target])
        assert (run["kept"], run["rejected"], run["reasons"]) == (kept, rejected, reasons[run["id"]])
        assert len(run["kept_samples"]) == min(SAMPLES, kept) and len(run["rejected_samples"]) == min(SAMPLES, rejected)
        for sample in run["kept_samples"]:
            assert _image(cycle_dir, sample["image"]).size and sample["filters"]["n_new"] >= 1
            assert ["new boxes", str(sample["filters"]["n_new"])] in sample["scores"]
        for sample in run["rejected_samples"]:
            assert sample["reason"] in reasons[run["id"]]
    # Stages that report a cost have it counted (the offline swap generator costs nothing).
    costs = [s["result"]["cost_usd"] for s in summary["stages"] if "cost_usd" in s["result"]]
    assert costs and data["cost_usd"] == sum(costs) == 0.0


def _rare_lines(path: Path, class_id: int) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.split()[:1] == [str(class_id)])


def test_the_headline_tells_the_watched_class_with_the_gates_numbers_and_what_review_bought(cycle: Site) -> None:
    """The rare class's story: its numbers are the gate's own per-class numbers at each model's threshold; the
    boxes review bought and random's expectation come from the oracle's answers, counted here independently."""
    ws, summary, cycle_dir = cycle
    data = cycle_report_data(ws, {**summary, "watch_classes": ["no_helmet"]}, cycle_dir)
    gate = _stage(summary, "retrain")["result"]["gate"]
    story = data["rare"][0]
    assert story["class"] == "no_helmet" and story["why"].startswith("watched")
    m = story["metrics"]
    new, old = gate["challenger_metrics"]["per_class"]["no_helmet"], gate["champion_metrics"]["per_class"]["no_helmet"]
    for key, theirs in (("recall", "recall"), ("precision", "precision"), ("threshold", "threshold"),
                        ("ap50", "map50")):
        assert (m[key]["challenger"], m[key]["champion"]) == (new[theirs], old[theirs]), key
    assert m["instances"] == new["instances"] and m["low_recall"] == (new["recall"] < 0.5)

    # What review bought: the no_helmet boxes in the captures verified in this cycle, against what as many
    # captures drawn at random from the twelve offered would have held (every capture's answer file is known).
    labels = ws.settings.workspace.parent / "labels"  # where tests.flows.test_cycle._site writes the answers
    with ws.catalog.connect() as con:
        verified = [f for (f,) in con.execute("SELECT c.source_frame FROM review_tasks t JOIN captures c "
                                              "ON c.id = t.capture_id WHERE t.status = 'verified'").fetchall()]
        offered = [f for (f,) in con.execute("SELECT source_frame FROM captures").fetchall()]
    bought = sum(_rare_lines(labels / f"cam_{f:06d}.txt", 1) for f in verified)
    everywhere = sum(_rare_lines(labels / f"cam_{f:06d}.txt", 1) for f in offered)
    assert story["review"]["captures"] == len(verified) == 6 and story["review"]["boxes"] == bought
    assert story["review"]["pool"] == len(offered) == 12
    assert story["review"]["random"] == pytest.approx(everywhere / 12 * 6, abs=0.05)
    # Synthesis for it in this cycle: the kept images of its runs.
    with ws.catalog.connect() as con:
        kept = con.execute("SELECT coalesce(sum(n_kept), 0) FROM synthesis_runs WHERE target_class = 1").fetchone()[0]
    assert story["synthetic_kept"] == kept


def test_review_effort_is_the_diff_against_the_pre_annotation_and_every_count_agrees(cycle: Site) -> None:
    """People's time is the cost: each verified box kept, fixed or drawn, each pre-annotated box deleted, priced
    by the stated model; the counts agree with what review pull recorded, and the header with the stages."""
    from feedback.report.effort import SECONDS

    ws, summary, cycle_dir = cycle
    data = cycle_report_data(ws, summary, cycle_dir)
    pull = _stage(summary, "review pull")["result"]
    effort = data["effort"]
    assert effort["captures"] == pull["verified"] and effort["boxes"] == pull["boxes"]
    assert effort["kept"] + effort["fixed"] + effort["added"] == effort["boxes"]
    # Every failure review pull recorded is one action on a pre-annotated box: a fix, a box drawn, one deleted.
    assert effort["fixed"] + effort["added"] + effort["deleted"] == pull["failures"] > 0
    assert effort["seconds"] == sum(SECONDS[k] * effort[k] for k in SECONDS) > 0
    assert "Papadopoulos" in effort["model"]
    assert data["people_s"] == effort["seconds"]
    assert [s["people_s"] for s in data["stages"]] == [effort["seconds"] if s["name"] == "review pull" else None
                                                       for s in data["stages"]]
    # The header's stage line says what the stage table and the mining section say.
    story = {x["stage"]: x["text"] for x in data["story"]}
    mine = _stage(summary, "mine")
    if mine["status"] == "done":
        assert story["mine"] == f"{mine['result']['clusters']} blind spots"
        assert data["mining"]["total"] == mine["result"]["clusters"]
        assert len(data["mining"]["clusters"]) == min(data["mining"]["total"], 6)


def test_the_selection_table_drops_parts_that_chose_nothing(cycle: Site) -> None:
    ws, summary, cycle_dir = cycle
    data = cycle_report_data(ws, summary, cycle_dir)
    pushed = _stage(summary, "review push")["result"]["picks"]
    selection = data["selection"]
    zero = {k for k in pushed[0]["parts"] if all(not p["parts"].get(k) for p in pushed)}
    assert set(selection["zero_parts"]) == zero
    for part in selection["parts"]:
        assert any(p["parts"].get(part) for p in selection["picks"]), part
    assert not zero & set(selection["parts"])
