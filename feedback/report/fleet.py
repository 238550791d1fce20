"""The fleet as a cycle left it: what publish did, the latest rollout and its canary judgment, the rollout events
of the cycle and each device's desired and running model.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from feedback.report.stages import stage_note
from feedback.rollout.canary import CanaryPolicy, Judgment, judge
from feedback.rollout.fleet_table import device_table
from store.rollouts import artifacts_published, latest_rollout, rollout_events_between
from store.settings import Workspace


def fleet(ws: Workspace, stages: Mapping[str, Any], window: tuple[datetime, datetime],
          gate: Mapping[str, Any] | None) -> dict[str, Any]:
    """What publish did in this cycle, and the fleet as it stands: the latest rollout, its canary judgment,
    each device's desired and running model."""
    with ws.catalog.connect() as con:
        models = [m for m in ((gate or {}).get("challenger"), (stages.get("publish") or {}).get("result", {})
                              .get("model")) if m]
        artifacts = artifacts_published(con, models, window)
        rollout = latest_rollout(con)
        events = rollout_events_between(con, window)
    if rollout is None and not artifacts:
        return {"status": "nothing published yet", "publish": stage_note(stages, "publish")}
    judgment = judge(ws, rollout) if rollout is not None and rollout.state == "canary" else None
    return {
        "status": None, "publish": stage_note(stages, "publish"),
        "artifacts": [{"model": a.model_id, "onnx_bytes": a.onnx_bytes, "parity": a.parity,
                       "published_at": a.published_at} for a in artifacts],
        "rollout": None if rollout is None else {
            "id": rollout.id, "model": rollout.model_id, "baseline": rollout.baseline_model_id,
            "canary_pct": rollout.canary_pct, "state": rollout.state, "started_at": rollout.started_at,
            "updated_at": rollout.updated_at},
        "judgment": None if judgment is None else {"healthy": judgment.healthy, "reasons": judgment.reasons,
                                                   "state": _judgment_state(judgment)},
        "events": [{"rollout": e.rollout_id, "at": e.happened_at, "action": e.action, "canary_pct": e.canary_pct,
                    "forced": e.forced} for e in events],
        "devices": device_table(ws)[:20],
    }


def _judgment_state(judgment: Judgment) -> str:
    """healthy; waiting (too few heartbeats from the canary's devices to judge, and none refused it); unhealthy."""
    if judgment.healthy:
        return "healthy"
    heartbeats = judgment.candidate_stats.heartbeats if judgment.candidate_stats else 0
    return "waiting" if heartbeats < CanaryPolicy().min_heartbeats and not judgment.refusals else "unhealthy"
