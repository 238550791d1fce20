"""One real improvement cycle (generated site, oracle review, 1 epoch at 64 px) shared by the report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store.settings import Workspace
from tests.flows.test_cycle import _site


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory, scene_pt: Path, prefect_api: None,
          ) -> tuple[Workspace, dict[str, Any], Path]:
    """(workspace, the cycle's summary, its folder) after improvement_cycle ran every stage once."""
    from flows.cycle import improvement_cycle

    ws, labels = _site(tmp_path_factory.mktemp("report_site"), scene_pt)
    summary = improvement_cycle(str(ws.settings.workspace), budget=6, reviewer="oracle", labels=str(labels),
                                holdout_share=0.0, synthetic_count=6, epochs=1, imgsz=64)
    return ws, summary, Path(summary["report"]).parent


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, Any], Path]:
    """A retrain stage judged from real evaluations with known mistakes: the champion finds every box; the
    challenger misses half the vests and raises a confident false alarm on every frame. Fast (no model)."""
    import numpy as np
    import supervision as sv

    from feedback.evaluation.dataset import load_dataset
    from feedback.evaluation.evaluate import evaluate_predictions
    from feedback.scenes import CLASSES, write_yolo_dataset
    from feedback.training.gate import decide
    from store.settings import Settings

    root = tmp_path_factory.mktemp("judged")
    data = load_dataset(write_yolo_dataset(root / "holdout", range(200, 212)), CLASSES)
    champion, challenger = {}, {}
    rng = np.random.default_rng(0)
    for image in data.images:
        truth = image.truth
        champion[image.image_id] = sv.Detections(xyxy=truth.xyxy, class_id=truth.class_id,
                                                 confidence=rng.uniform(0.6, 0.95, len(truth)))
        vest = np.flatnonzero(truth.class_id == 2)
        keep = np.setdiff1d(np.arange(len(truth)), vest[::2])
        challenger[image.image_id] = sv.Detections(
            xyxy=np.vstack([truth.xyxy[keep], [[5, 5, 45, 45]]]), class_id=np.append(truth.class_id[keep], 0),
            confidence=np.append(rng.uniform(0.5, 0.95, len(keep)), 0.97))
    cycle_dir = root / "ws" / "cycles" / "c1"
    metrics = {role: {**evaluate_predictions(data, predictions, report_dir=cycle_dir / "evaluation" / role),
                      "data": str(data.root)}
               for role, predictions in (("champion", champion), ("challenger", challenger))}
    decision = decide(metrics["challenger"], metrics["champion"])
    gate = {"promoted": decision.promoted, "reasons": decision.reasons, "challenger": "m-challenger",
            "champion": "m-champion", "dataset_version": 1, "margin": decision.margin, "tolerance": decision.tolerance,
            "challenger_metrics": metrics["challenger"], "champion_metrics": metrics["champion"]}
    summary = {"cycle": "c1", "workspace": str(root / "ws"), "started_at": "2026-01-01T00:00:00+00:00",
               "finished_at": "2026-01-01T00:05:00+00:00",
               "stages": [{"name": "retrain", "status": "done", "seconds": 12.5,
                           "result": {"dataset_version": 1, "gate": gate}}]}
    return Workspace(Settings(workspace=root / "ws", fsync=False)), summary, cycle_dir


@pytest.fixture(scope="module")
def later_stages(cycle: tuple[Workspace, dict[str, Any], Path], tmp_path_factory: pytest.TempPathFactory,
                 ) -> tuple[Workspace, dict[str, Any], Path]:
    """A copy of the cycle's workspace taken through the later stages with the real code, where the cycle did not
    run them: mining (clusters of the reviewed failures, prompts), synthesis (offline swap images for the first
    cluster, kept or rejected by the real filters), and always a synthesis run for the rarest class and publish
    (the refused challenger exported anyway and rolled out to 10% of the fleet, two devices registered)."""
    import shutil
    import time

    from edge.protocol import utc_now
    from feedback.embeddings.choice import default_embedder
    from feedback.mining.mine import mine_clusters
    from feedback.mining.prompts import Phrasebook, write_prompts
    from feedback.rollout.publish import publish_and_start
    from feedback.synthesis.clusters import active_cluster_ids, load_cluster
    from feedback.synthesis.compose.swap import SwapGenerator
    from feedback.synthesis.port import SynthesisRequest
    from feedback.synthesis.service import synthesize, synthesize_for_loop
    from feedback.synthesis.targets import confusable_for
    from store.clusters import save_prompts
    from store.devices import add_device
    from store.settings import Settings

    ws, summary, cycle_dir = cycle
    root = tmp_path_factory.mktemp("later") / "ws"
    shutil.copytree(ws.settings.workspace, root)
    copy = Workspace(Settings(workspace=root, fsync=False))
    clock = time.perf_counter()

    def stage(name: str, result: dict[str, Any]) -> dict[str, Any]:
        nonlocal clock
        seconds, clock = round(time.perf_counter() - clock, 1), time.perf_counter()
        return {"name": name, "status": "done", "seconds": seconds, "result": result}

    ran = {s["name"] for s in summary["stages"] if s["status"] == "done"}
    added = []
    if "mine" not in ran:  # the cycle flow mines by itself once its mine stage is wired
        found = mine_clusters(copy, default_embedder(copy), seed=0, min_size=3, progress=False)
        book = Phrasebook.from_settings(copy.settings)
        written = [p for c in found if not c.noise for p in write_prompts(c, book, variants=2, seed=0)]
        with copy.catalog.connect() as con:
            save_prompts(con, written)
        added.append(stage("mine", {"clusters": sum(not c.noise for c in found), "prompts": len(written)}))
    runs = []
    if "synthesize" not in ran:
        spec = load_cluster(copy, active_cluster_ids(copy)[0])
        request = SynthesisRequest(
            target_class=spec.target_class, count=6, seed=0, cluster_id=spec.id, **{
                k: spec.prompts[0][k] for k in ("prompt", "negative_prompt", "edit_instruction")},
            confusable_classes=(spec.confusable_class if spec.confusable_class is not None
                                else confusable_for(copy, spec.target_class),), attributes=spec.attributes)
        runs.append(synthesize(copy, SwapGenerator(), request, cluster=spec).as_dict())
    runs.append(synthesize_for_loop(copy, 4, seed=0))  # a run for a class, not a cluster
    added.append(stage("synthesize" if "synthesize" not in ran else "synthesize for a class",
                       {"runs": runs, "kept": sum(r["kept"] for r in runs),
                        "cost_usd": sum(r["cost_usd"] for r in runs)}))

    for name in ("dock-cam-1", "gate-cam-2"):
        add_device(copy.catalog, copy.objects, name)
    challenger = next(s for s in summary["stages"] if s["name"] == "retrain")["result"]["gate"]["challenger"]
    rollout = publish_and_start(copy, challenger, canary_pct=10.0)
    publish = stage("publish", {"model": challenger, "rollout": rollout.id, "canary_pct": rollout.canary_pct})

    # The order improvement_cycle runs them in: mining and synthesis before retrain, publish (skipped there:
    # nothing was promoted) last.
    replaced = {"publish", *(s["name"] for s in added)}  # the cycle's own, skipped, are replaced
    kept = [s for s in summary["stages"] if s["name"] not in replaced]
    at = next(i for i, s in enumerate(kept) if s["name"] == "retrain")
    stages = [*kept[:at], *added, *kept[at:], publish]
    after = {**summary, "workspace": str(root), "stages": stages, "finished_at": utc_now().isoformat()}
    return copy, after, root / cycle_dir.relative_to(ws.settings.workspace)
