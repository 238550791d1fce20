"""The publish stage: a promoted champion becomes a device artifact (ONNX + reference set) and starts its canary.

Only a model the gate promoted is published; a cycle whose challenger lost has nothing to roll out.
"""

from __future__ import annotations

from typing import TypedDict

from prefect import flow, task

from feedback.rollout.publish import publish_and_start
from flows.common import CATALOG_LIMIT, Skipped, limited, open_workspace
from store.models import champion


class Published(TypedDict):
    rollout: str
    model: str
    baseline: str | None
    canary_pct: float
    state: str


@task(name="rollout", retries=1)
def rollout(workspace: str | None, model: str, canary_pct: float) -> Published:
    with limited(CATALOG_LIMIT):
        started = publish_and_start(open_workspace(workspace), model, canary_pct)
    return {"rollout": started.id, "model": started.model_id, "baseline": started.baseline_model_id,
            "canary_pct": started.canary_pct, "state": started.state}


@flow(name="publish", log_prints=True)
def publish_flow(workspace: str | None = None, model: str | None = None, canary_pct: float = 10.0,
                 promoted: bool | None = None) -> Published | Skipped:
    """Export, verify and publish `model` (default: the champion), then roll it out to `canary_pct` of devices;
    skipped when `promoted` is False (the cycle's gate refused its challenger, or nothing was trained)."""
    if promoted is False:
        return {"skipped": "no new champion this cycle"}
    if model is None:
        with open_workspace(workspace).catalog.connect() as con:
            current = champion(con)
        if current is None:
            return {"skipped": "no champion to publish"}
        model = current.id
    result = rollout(workspace, model, canary_pct)
    print(f"publish: {model} rolling out to {canary_pct:g}% of devices ({result['rollout']})")
    return result
