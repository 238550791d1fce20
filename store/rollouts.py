"""Rollouts in the catalog: published artifacts, rollouts and their events, device pins, and the heartbeat
and capture reads a canary is judged on. Callers hold the connection (and its transaction) themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from edge.protocol import ArtifactManifest, utc_now


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


def get_rollout(con: duckdb.DuckDBPyConnection, rollout_id: str) -> Rollout | None:
    return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", [rollout_id]).fetchone())


def active_rollout(con: duckdb.DuckDBPyConnection) -> Rollout | None:
    return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE state = 'canary'").fetchone())


def latest_rollout(con: duckdb.DuckDBPyConnection) -> Rollout | None:
    return _rollout(con.execute(f"SELECT {_COLUMNS} FROM rollouts ORDER BY started_at DESC LIMIT 1").fetchone())


def rollout_in_force(con: duckdb.DuckDBPyConnection) -> Rollout | None:
    """The latest rollout still in force: a canary, or a promoted one (what a rollback undoes)."""
    return _rollout(con.execute(
        f"SELECT {_COLUMNS} FROM rollouts WHERE state IN ('canary', 'promoted') ORDER BY started_at DESC LIMIT 1"
    ).fetchone())


def fleet_model(con: duckdb.DuckDBPyConnection) -> str | None:
    """The model of the latest promoted rollout; None: each device runs its installed model."""
    row = con.execute(
        "SELECT model_id FROM rollouts WHERE state = 'promoted' ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def insert_rollout(con: duckdb.DuckDBPyConnection, rollout_id: str, model_id: str, baseline_model_id: str | None,
                   canary_pct: float, now: datetime) -> None:
    con.execute(f"INSERT INTO rollouts ({_COLUMNS}) VALUES (?, ?, ?, ?, 'canary', ?, ?)",
                [rollout_id, model_id, baseline_model_id, canary_pct, now, now])


def set_canary_pct(con: duckdb.DuckDBPyConnection, rollout_id: str, canary_pct: float, now: datetime) -> None:
    con.execute("UPDATE rollouts SET canary_pct = ?, updated_at = ? WHERE id = ?", [canary_pct, now, rollout_id])


def mark_promoted(con: duckdb.DuckDBPyConnection, rollout_id: str, now: datetime) -> None:
    con.execute("UPDATE rollouts SET state = 'promoted', canary_pct = 100, updated_at = ? WHERE id = ?",
                [now, rollout_id])


def mark_rolled_back(con: duckdb.DuckDBPyConnection, rollout_id: str, now: datetime) -> None:
    con.execute("UPDATE rollouts SET state = 'rolled_back', updated_at = ? WHERE id = ?", [now, rollout_id])


def record_event(con: duckdb.DuckDBPyConnection, rollout_id: str, action: str, pct: float | None,
                 forced: bool = False, judgment: dict[str, Any] | None = None) -> None:
    """One operator change (start | grow | promote | rollback), with the canary judgment it was made on."""
    con.execute("INSERT INTO rollout_events VALUES (?, ?, ?, ?, ?, ?)",
                [rollout_id, utc_now(), action, pct, forced, json.dumps(judgment) if judgment else None])


def pins(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Device -> the model it is held on."""
    return dict(con.execute("SELECT device, model_id FROM device_pins ORDER BY device").fetchall())


def pin(con: duckdb.DuckDBPyConnection, device: str, model_id: str, now: datetime) -> None:
    con.execute("INSERT OR REPLACE INTO device_pins VALUES (?, ?, ?)", [device, model_id, now])


def unpin(con: duckdb.DuckDBPyConnection, device: str) -> None:
    con.execute("DELETE FROM device_pins WHERE device = ?", [device])


def artifact_manifest(con: duckdb.DuckDBPyConnection, model_id: str) -> ArtifactManifest | None:
    """The manifest devices receive for `model_id`; None: it has not been published."""
    row = con.execute("SELECT manifest FROM artifacts WHERE model_id = ?", [model_id]).fetchone()
    return ArtifactManifest.model_validate_json(row[0]) if row else None


def put_artifact(con: duckdb.DuckDBPyConnection, manifest: ArtifactManifest, parity: dict[str, Any]) -> None:
    """Record a published artifact, replacing an earlier one of the same model."""
    con.execute(
        "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
        [manifest.model_version, manifest.onnx_sha256, manifest.onnx_bytes, manifest.reference_sha256,
         manifest.model_dump_json(), json.dumps(parity), manifest.published_at],
    )


def holdout_images(con: duckdb.DuckDBPyConnection, limit: int) -> list[tuple[str, str]]:
    """(sha256, media type) of up to `limit` real holdout images, by sha256: a stable choice to check exports on."""
    return con.execute(
        "SELECT s.image_sha256, i.media_type FROM splits s JOIN images i ON i.sha256 = s.image_sha256 "
        "WHERE s.split = 'holdout' AND i.origin = 'real' ORDER BY s.image_sha256 LIMIT ?", [limit]
    ).fetchall()


@dataclass(frozen=True)
class VersionActivity:
    """What devices running one model version (or every other) reported since a time, as counted."""

    devices: list[str]
    heartbeats: int
    fps: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    errors: int  # detector errors since `since`: counters are per device, so only their increases add up
    device_hours: float
    captures: int
    uploads_by_trigger: dict[str, int]
    sampled_frames: int  # random-trigger captures: the only ones whose detections say what a model sees
    detections_by_class: dict[str, int]  # on the random sample only


def version_activity(con: duckdb.DuckDBPyConnection, since: datetime, version: str, *,
                     others: bool = False) -> VersionActivity:
    """Heartbeats and captures since `since` of model `version` (or, with `others`, of every other version)."""
    where, args = ("model_version <> ?" if others else "model_version = ?"), [since, version]
    on_captures = where.replace("model_version", "c.model_version")
    hb = con.execute(f"""
        WITH h AS (
            SELECT device, sent_at, fps, inference_ms_p50, inference_ms_p99, model_version,
                   errors - lag(errors) OVER (PARTITION BY device ORDER BY sent_at) AS new_errors
            FROM heartbeats WHERE sent_at >= ?)
        SELECT list(DISTINCT device ORDER BY device), count(*), avg(fps), median(inference_ms_p50),
               avg(inference_ms_p99), coalesce(sum(greatest(new_errors, 0)), 0)
        FROM h WHERE {where}""", args).fetchone()
    span = con.execute(f"""
        SELECT coalesce(sum(epoch(last) - epoch(first)), 0) / 3600.0 FROM (
            SELECT device, min(sent_at) AS first, max(sent_at) AS last FROM heartbeats
            WHERE sent_at >= ? AND {where} GROUP BY device)""", args).fetchone()[0]
    captures = con.execute(f"SELECT count(*) FROM captures WHERE captured_at >= ? AND {where}", args).fetchone()[0]
    by_trigger = dict(con.execute(f"""
        SELECT t.reason, count(*) FROM captures c JOIN triggers t ON t.capture_id = c.id
        WHERE c.captured_at >= ? AND {on_captures} GROUP BY t.reason""", args).fetchall())
    sampled = con.execute(f"""
        SELECT count(*) FROM captures c JOIN triggers t ON t.capture_id = c.id AND t.reason = 'random'
        WHERE c.captured_at >= ? AND {on_captures}""", args).fetchone()[0]
    per_class = dict(con.execute(f"""
        SELECT coalesce(d.class_name, 'class ' || d.class_id::VARCHAR), count(*)
        FROM captures c JOIN triggers t ON t.capture_id = c.id AND t.reason = 'random'
        JOIN detections d ON d.capture_id = c.id
        WHERE c.captured_at >= ? AND {on_captures} GROUP BY 1""", args).fetchall())
    return VersionActivity(
        devices=list(hb[0] or []), heartbeats=int(hb[1]), fps=hb[2], latency_p50_ms=hb[3], latency_p99_ms=hb[4],
        errors=int(hb[5]), device_hours=float(span), captures=int(captures), uploads_by_trigger=by_trigger,
        sampled_frames=int(sampled), detections_by_class=per_class,
    )


def versions_seen(con: duckdb.DuckDBPyConnection, since: datetime) -> list[str]:
    """Every model version some device reported running since `since`."""
    return [v for (v,) in con.execute("SELECT DISTINCT model_version FROM heartbeats WHERE sent_at >= ? "
                                      "ORDER BY 1", [since]).fetchall()]


def update_reports(con: duckdb.DuckDBPyConnection, since: datetime,
                   target: str) -> list[tuple[str, str | None, str | None]]:
    """(device, update state, detail) of each device's latest heartbeat since `since` about updating to `target`."""
    return con.execute("""
        SELECT device, arg_max(update_state, sent_at), arg_max(update_detail, sent_at) FROM heartbeats
        WHERE sent_at >= ? AND update_target = ? GROUP BY device ORDER BY device""", [since, target]).fetchall()


@dataclass(frozen=True)
class LastHeartbeat:
    model_version: str | None
    update_state: str | None
    update_detail: str | None
    sent_at: datetime | None


def last_heartbeats(con: duckdb.DuckDBPyConnection) -> dict[str, LastHeartbeat]:
    """Device -> what its latest heartbeat said it runs, and how its update went."""
    return {row[0]: LastHeartbeat(*row[1:]) for row in con.execute("""
        SELECT device, arg_max(model_version, sent_at), arg_max(update_state, sent_at),
               arg_max(update_detail, sent_at), max(sent_at) FROM heartbeats GROUP BY device""").fetchall()}


@dataclass(frozen=True)
class PublishedArtifact:
    model_id: str
    onnx_bytes: int
    parity: dict[str, Any]  # the ONNX against the .pt on holdout frames
    published_at: datetime


@dataclass(frozen=True)
class RolloutEvent:
    rollout_id: str
    happened_at: datetime
    action: str  # start | grow | promote | rollback
    canary_pct: float | None
    forced: bool


def artifacts_published(con: duckdb.DuckDBPyConnection, models: Sequence[str], window: tuple[datetime, datetime],
                        ) -> list[PublishedArtifact]:
    """The artifacts of `models` (published whenever) and any published in `window`, newest first."""
    rows = con.execute("SELECT model_id, onnx_bytes, parity, published_at FROM artifacts "
                       "WHERE list_contains(?, model_id) OR published_at BETWEEN ? AND ? "
                       "ORDER BY published_at DESC", [list(models), *window]).fetchall()
    return [PublishedArtifact(m, n, json.loads(parity), at) for m, n, parity, at in rows]


def rollout_events_between(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime]) -> list[RolloutEvent]:
    """Every rollout's events in `window`, oldest first."""
    rows = con.execute("SELECT rollout_id, happened_at, action, canary_pct, forced FROM rollout_events "
                       "WHERE happened_at BETWEEN ? AND ? ORDER BY happened_at", list(window)).fetchall()
    return [RolloutEvent(*r) for r in rows]
