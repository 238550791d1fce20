"""Deployments in the catalog: rollouts (a canary share of the fleet, promoted or rolled back) and pins,
published as the desired state after every change, while the catalog lock is still held.

The fleet model is the model of the latest promoted rollout (None: each device's installed model), so
rolling back a promoted rollout returns the fleet to what it ran before, one rollout at a time.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import duckdb

from edge.protocol import ArtifactManifest, utc_now
from feedback.rollout.canary import judge
from feedback.rollout.desired import ActiveRollout, DesiredState, publish_state
from feedback.rollout.trust import SigningKeys, sign_state
from store.devices import list_devices
from store.objects import ObjectStore
from store.rollouts import (
    Rollout, active_rollout, artifact_manifest, fleet_model, get_rollout, insert_rollout, mark_promoted,
    mark_rolled_back, pin, pins, record_event, rollout_in_force, set_canary_pct, unpin,
)
from store.settings import Workspace

log = logging.getLogger(__name__)


class RolloutError(ValueError):
    """A deployment change that cannot be made; the message names the model, device or rollout."""


def _manifest(con: duckdb.DuckDBPyConnection, model_id: str) -> ArtifactManifest:
    manifest = artifact_manifest(con, model_id)
    if manifest is None:
        raise RolloutError(f"model {model_id!r} has not been published: run `edgeloop publish {model_id}` first")
    return manifest


def desired_state(con: duckdb.DuckDBPyConnection) -> DesiredState:
    fleet, active, pinned = fleet_model(con), active_rollout(con), pins(con)
    named = {m for m in (fleet, active.model_id if active else None, *pinned.values()) if m}
    return DesiredState(
        fleet=fleet,
        rollout=ActiveRollout(id=active.id, model_id=active.model_id, canary_pct=active.canary_pct) if active else None,
        pins=pinned,
        artifacts={m: _manifest(con, m) for m in sorted(named)},
    )


def publish_desired_state(con: duckdb.DuckDBPyConnection, objects: ObjectStore,
                          signing_keys: Path | None = None) -> DesiredState:
    """Write the desired state for the API, and sign it for the devices where the fleet has keys (TUF, DESIGN
    decision 10); called with the catalog lock held, so that two changes can never publish out of order."""
    state = desired_state(con)
    if signing_keys is not None:
        sign_state(objects, SigningKeys.load(signing_keys), state)  # first: a device never sees an unsigned state
    else:
        log.warning("the desired state is not signed: devices started with --trust-root will refuse its models "
                    "(make keys with `edgeloop keys init --out DIR`, then set EDGELOOP_SIGNING_KEYS=DIR)")
    publish_state(objects, state)
    return state


def start_rollout(ws: Workspace, model_id: str, canary_pct: float) -> Rollout:
    """Send `model_id` to the devices whose bucket lies below `canary_pct`; starting again with the same
    model grows the canary (the devices already in it stay in it)."""
    if not 0 < canary_pct <= 100:
        raise RolloutError(f"--canary {canary_pct:g} must lie in (0, 100]")
    with ws.catalog.connect() as con:
        con.begin()
        _manifest(con, model_id)
        active = active_rollout(con)
        now = utc_now()
        if active is not None and active.model_id != model_id:
            raise RolloutError(f"rollout {active.id} of {active.model_id} is in progress at {active.canary_pct:g}%: "
                               "promote it or roll it back first")
        if active is not None:
            if canary_pct < active.canary_pct:
                raise RolloutError(f"--canary {canary_pct:g} would shrink rollout {active.id} from "
                                   f"{active.canary_pct:g}%: a canary only grows (roll it back instead)")
            set_canary_pct(con, active.id, canary_pct, now)
            record_event(con, active.id, "grow", canary_pct)
            rollout_id = active.id
        else:
            fleet = fleet_model(con)
            if fleet == model_id:
                raise RolloutError(f"{model_id} is already the fleet's model")
            rollout_id = f"r-{uuid.uuid4().hex[:12]}"
            insert_rollout(con, rollout_id, model_id, fleet, canary_pct, now)
            record_event(con, rollout_id, "start", canary_pct)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
        return get_rollout(con, rollout_id)  # type: ignore[return-value]


def promote_rollout(ws: Workspace, *, force: bool = False) -> tuple[Rollout, dict[str, Any]]:
    """Make the canary's model the fleet's, if the canary is healthy (or `force`); returns the rollout and
    the judgment it was promoted on. RolloutError, with the judgment's reasons, when it is refused."""
    with ws.catalog.connect() as con:
        active = active_rollout(con)
    if active is None:
        raise RolloutError("no rollout is in progress (start one with `edgeloop rollout start MODEL`)")
    judgment = judge(ws, active).as_dict()
    if not judgment["healthy"] and not force:
        raise RolloutError(f"the canary of {active.model_id} is not healthy: " + "; ".join(judgment["reasons"])
                           + " (--force promotes it anyway)")
    with ws.catalog.connect() as con:
        con.begin()
        if (still := active_rollout(con)) is None or still.id != active.id:
            raise RolloutError(f"rollout {active.id} changed while it was being judged; look again")
        mark_promoted(con, active.id, utc_now())
        record_event(con, active.id, "promote", 100.0, forced=force and not judgment["healthy"], judgment=judgment)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
        return get_rollout(con, active.id), judgment  # type: ignore[return-value]


def rollback_rollout(ws: Workspace) -> Rollout:
    """Undo the latest rollout still in force (a canary, or a promoted one): its devices return to the
    model the fleet ran before it."""
    with ws.catalog.connect() as con:
        con.begin()
        target = rollout_in_force(con)
        if target is None:
            raise RolloutError("there is no rollout to roll back")
        mark_rolled_back(con, target.id, utc_now())
        record_event(con, target.id, "rollback", None)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
        return get_rollout(con, target.id)  # type: ignore[return-value]


def pin_device(ws: Workspace, device: str, model_id: str) -> None:
    """Hold `device` on `model_id` whatever rollouts do, until unpinned."""
    # Checked before the transaction: the registry never deletes a device (revoked ones can be pinned too).
    if device not in {d.name for d in list_devices(ws.catalog)}:
        raise RolloutError(f"no device named {device!r} (see `edgeloop devices list`)")
    with ws.catalog.connect() as con:
        con.begin()
        _manifest(con, model_id)
        pin(con, device, model_id, utc_now())
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()


def unpin_device(ws: Workspace, device: str) -> None:
    with ws.catalog.connect() as con:
        con.begin()
        if device not in pins(con):
            raise RolloutError(f"device {device!r} is not pinned")
        unpin(con, device)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
