"""The fleet as a table: each registered device, its canary bucket, what it should run now and what it
last said it runs (what `edgeloop rollout status` and the cycle report show).
"""

from __future__ import annotations

from typing import Any

from feedback.rollout.deployments import desired_state
from feedback.rollout.desired import answer_for, canary_bucket
from store.devices import list_devices
from store.rollouts import LastHeartbeat, last_heartbeats
from store.settings import Workspace

NEVER_HEARD = LastHeartbeat(None, None, None, None)  # a device that has sent no heartbeat yet


def device_table(ws: Workspace) -> list[dict[str, Any]]:
    """Each registered device: its canary bucket, what it should run now, and what it last said it runs."""
    devices = [d.name for d in list_devices(ws.catalog) if d.revoked_at is None]
    with ws.catalog.connect() as con:
        state = desired_state(con)
        last = last_heartbeats(con)
    out = []
    for device in devices:
        answer = answer_for(state, device)
        seen = last.get(device) or NEVER_HEARD
        out.append({"device": device, "bucket": round(canary_bucket(device), 3), "reason": answer.reason,
                    "desired": answer.model_version, "running": seen.model_version, "update_state": seen.update_state,
                    "update_detail": seen.update_detail,
                    "last_heartbeat": seen.sent_at.isoformat() if seen.sent_at else None})
    return out
