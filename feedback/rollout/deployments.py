"""Deployments in the catalog: rollouts (a canary share of the fleet, promoted or rolled back) and pins,
published as the desired state after every change, while the catalog lock is still held.

The fleet model is the model of the latest promoted rollout (None: each device's installed model), so
rolling back a promoted rollout returns the fleet to what it ran before, one rollout at a time.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from edge.protocol import ArtifactManifest, utc_now
from feedback.rollout.desired import ActiveRollout, DesiredState, publish_state
from feedback.rollout.trust import SigningKeys, sign_state
from store.objects import ObjectStore
from store.settings import Workspace

log = logging.getLogger(__name__)


class RolloutError(ValueError):
    """A deployment change that cannot be made; the message names the model, device or rollout."""


@dataclass(frozen=True)
class Rollout:
    id: str
    model_id: str
    baseline_model_id: str | None
    canary_pct: float
    state: str  # canary | promoted | rolled_back
    started_at: datetime
    updated_at: datetime


_COLUMNS = "id, model_id, baseline_model_id, canary_pct, state, started_at, updated_at"


def _rollout(row: tuple | None) -> Rollout | None:
    return Rollout(*row) if row else None


def active_rollout(con: duckdb.DuckDBPyConnection) -> Rollout | None:
    return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE state = 'canary'").fetchone())


def latest_rollout(con: duckdb.DuckDBPyConnection) -> Rollout | None:
    return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts ORDER BY started_at DESC LIMIT 1").fetchone())


def fleet_model(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute(
        "SELECT model_id FROM rollouts WHERE state = 'promoted' ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def pins(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("SELECT device, model_id FROM device_pins ORDER BY device").fetchall())


def _manifest(con: duckdb.DuckDBPyConnection, model_id: str) -> ArtifactManifest:
    row = con.execute("SELECT manifest FROM artifacts WHERE model_id = ?", [model_id]).fetchone()
    if row is None:
        raise RolloutError(f"model {model_id!r} has not been published: run `edgeloop publish {model_id}` first")
    return ArtifactManifest.model_validate_json(row[0])


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


def _event(con: duckdb.DuckDBPyConnection, rollout_id: str, action: str, pct: float | None,
           forced: bool = False, judgment: dict[str, Any] | None = None) -> None:
    con.execute("INSERT INTO rollout_events VALUES (?, ?, ?, ?, ?, ?)",
                [rollout_id, utc_now(), action, pct, forced, json.dumps(judgment) if judgment else None])


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
            con.execute("UPDATE rollouts SET canary_pct = ?, updated_at = ? WHERE id = ?", [canary_pct, now, active.id])
            _event(con, active.id, "grow", canary_pct)
            rollout_id = active.id
        else:
            fleet = fleet_model(con)
            if fleet == model_id:
                raise RolloutError(f"{model_id} is already the fleet's model")
            rollout_id = f"r-{uuid.uuid4().hex[:12]}"
            con.execute(f"INSERT INTO rollouts ({_COLUMNS}) VALUES (?, ?, ?, ?, 'canary', ?, ?)",
                        [rollout_id, model_id, fleet, canary_pct, now, now])
            _event(con, rollout_id, "start", canary_pct)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
        return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", [rollout_id]).fetchone())  # type: ignore[return-value]


def promote_rollout(ws: Workspace, *, force: bool = False) -> tuple[Rollout, dict[str, Any]]:
    """Make the canary's model the fleet's, if the canary is healthy (or `force`); returns the rollout and
    the judgment it was promoted on. RolloutError, with the judgment's reasons, when it is refused."""
    from feedback.rollout.canary import judge

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
        con.execute("UPDATE rollouts SET state = 'promoted', canary_pct = 100, updated_at = ? WHERE id = ?",
                    [utc_now(), active.id])
        _event(con, active.id, "promote", 100.0, forced=force and not judgment["healthy"], judgment=judgment)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
        return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", [active.id]).fetchone()), judgment  # type: ignore[return-value]


def rollback_rollout(ws: Workspace) -> Rollout:
    """Undo the latest rollout still in force (a canary, or a promoted one): its devices return to the
    model the fleet ran before it."""
    with ws.catalog.connect() as con:
        con.begin()
        target = _rollout(con.execute(
            f"SELECT {_COLUMNS} FROM rollouts WHERE state IN ('canary', 'promoted') ORDER BY started_at DESC LIMIT 1"
        ).fetchone())
        if target is None:
            raise RolloutError("there is no rollout to roll back")
        con.execute("UPDATE rollouts SET state = 'rolled_back', updated_at = ? WHERE id = ?", [utc_now(), target.id])
        _event(con, target.id, "rollback", None)
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()
        return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", [target.id]).fetchone())  # type: ignore[return-value]


def pin_device(ws: Workspace, device: str, model_id: str) -> None:
    """Hold `device` on `model_id` whatever rollouts do, until unpinned."""
    with ws.catalog.connect() as con:
        con.begin()
        if not con.execute("SELECT 1 FROM devices WHERE name = ?", [device]).fetchone():
            raise RolloutError(f"no device named {device!r} (see `edgeloop devices list`)")
        _manifest(con, model_id)
        con.execute("INSERT OR REPLACE INTO device_pins VALUES (?, ?, ?)", [device, model_id, utc_now()])
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()


def unpin_device(ws: Workspace, device: str) -> None:
    with ws.catalog.connect() as con:
        con.begin()
        if not con.execute("SELECT 1 FROM device_pins WHERE device = ?", [device]).fetchone():
            raise RolloutError(f"device {device!r} is not pinned")
        con.execute("DELETE FROM device_pins WHERE device = ?", [device])
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
        con.commit()


def publish_and_start(ws: Workspace, model_id: str, canary_pct: float = 100.0) -> Rollout:
    """Publish `model_id` unless it already is, and start (or grow) its rollout: the demo's one call."""
    from feedback.rollout.publish import get_artifact, publish

    if get_artifact(ws, model_id) is None:
        publish(ws, model_id)
    return start_rollout(ws, model_id, canary_pct)
