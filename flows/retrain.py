"""The retrain stage: freeze a dataset version, fine-tune the champion on it, judge the challenger on real images.

A version some model was already trained on is not trained on again: there is nothing new to learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from feedback.training.choice import get_backend
from feedback.training.gate_run import run_gate
from flows.common import CATALOG_LIMIT, THIS_WORKSPACE, limited, open_workspace
from store.datasets import build_dataset
from store.models import trained_on


class Trained(TypedDict):
    model: str
    parent: str | None
    dataset_version: int
    duration_s: float
    imgsz: int | None
    thresholds: dict[str, float] | None  # each class's operating point, where the recipe chose them


class GateVerdict(TypedDict):
    promoted: bool
    reasons: list[str]
    challenger: str
    champion: str | None
    dataset_version: int | None
    margin: float
    tolerance: float
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None


class Retrained(TypedDict):
    dataset_version: int
    trained: Trained
    gate: GateVerdict


class AlreadyTrained(TypedDict):
    skipped: str
    dataset_version: int


@task(name="dataset-version")
def dataset_version(workspace: str | None) -> int:
    with limited(CATALOG_LIMIT):
        return build_dataset(open_workspace(workspace).catalog).version


def _already_trained(workspace: str | None, version: int) -> str | None:
    """A model already trained on `version`, if any: a version is frozen labels, so training on it again
    (from that model's champion successor or not) would learn nothing new."""
    with open_workspace(workspace).catalog.connect() as con:
        return trained_on(con, version)


# Cached on its inputs and this code: a cycle rerun after a later stage failed reuses the trained model.
@task(name="challenger", cache_policy=INPUTS + TASK_SOURCE + THIS_WORKSPACE, persist_result=True, retries=1)
def challenger(workspace: str | None, version: int, profile: str, epochs: int | None, imgsz: int | None,
               seed: int, backend: str = "local", watch_classes: list[str] | None = None) -> Trained:
    ws = open_workspace(workspace)
    overrides = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz}.items() if v is not None}
    result = get_backend(backend, ws).train(ws, dataset_version=version, profile=profile, overrides=overrides,
                                            seed=seed, watch=watch_classes or ())
    return {"model": result.model_id, "parent": result.parent_id, "dataset_version": result.dataset_version,
            "duration_s": round(result.duration_s, 1), "imgsz": result.params.get("imgsz"),
            "thresholds": result.thresholds}


@task(name="gate-verdict")
def gate_verdict(workspace: str | None, model: str, margin: float, tolerance: float, report_dir: str | None,
                 watch_classes: list[str] | None = None) -> GateVerdict:
    with limited(CATALOG_LIMIT):
        r = run_gate(open_workspace(workspace), model, margin=margin, tolerance=tolerance,
                     report_dir=Path(report_dir) if report_dir else None, progress=False, watch=watch_classes or ())
    return {"promoted": r.decision.promoted, "reasons": r.decision.reasons, "challenger": r.challenger_id,
            "champion": r.champion_id, "dataset_version": r.dataset_version, "margin": margin, "tolerance": tolerance,
            "challenger_metrics": r.challenger_metrics, "champion_metrics": r.champion_metrics}


@flow(name="retrain", log_prints=True)
def retrain_flow(workspace: str | None = None, profile: str = "cpu", epochs: int | None = None,
                 imgsz: int | None = None, margin: float = 0.005, tolerance: float = 0.02, seed: int = 0,
                 report_dir: str | None = None, backend: str = "local", watch_classes: list[str] | None = None) -> Retrained | AlreadyTrained:
    """Dataset version -> train (here, or on Vertex AI with backend "vertex") -> evaluate -> gate; skipped
    when a model was trained on this version already."""
    version = dataset_version(workspace)
    if (done := _already_trained(workspace, version)) is not None:
        print(f"retrain: dataset v{version} was already trained on ({done}); nothing new")
        return {"skipped": f"dataset v{version} already trained on by {done}", "dataset_version": version}
    trained = challenger(workspace, version, profile, epochs, imgsz, seed, backend, watch_classes)
    verdict = gate_verdict(workspace, trained["model"], margin, tolerance, report_dir, watch_classes)
    print(f"retrain: {trained['model']} on v{version}: {'promoted' if verdict['promoted'] else 'refused'}")
    return {"dataset_version": version, "trained": trained, "gate": verdict}
