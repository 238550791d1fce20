"""Canary judgment: how the rollout's model does on its devices against the rest of the fleet, from the
heartbeats and captures loaded into the catalog since the rollout started.

Per model version: fps, inference latency p50/p99, detector errors, uploads per hour by trigger, and
detections per frame by class (from the random sample only: the other triggers pick frames on purpose).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from feedback.rollout.deployments import Rollout
from store.settings import Workspace


@dataclass(frozen=True)
class CanaryPolicy:
    """When a canary is unhealthy. Detecting more of a class is what a new model is for, so only a drop is judged."""

    min_heartbeats: int = 3  # evidence from the canary before anything is judged healthy
    min_fps_ratio: float = 0.5
    max_p99_ratio: float = 2.0
    p99_slack_ms: float = 5.0  # small latencies are noisy: a ratio alone would judge 2 ms against 1 ms
    max_upload_ratio: float = 3.0
    min_captures: int = 10  # per side, before uploads per hour are compared
    min_class_ratio: float = 0.5
    min_class_rate: float = 0.05  # detections per frame of the rest below which a class is not judged
    min_sampled_frames: int = 10  # random-trigger captures per side before classes are compared


@dataclass
class VersionStats:
    devices: list[str]
    heartbeats: int
    fps: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    errors: int
    device_hours: float
    captures: int
    uploads_per_hour: dict[str, float | None] = field(default_factory=dict)
    sampled_frames: int = 0
    detections_per_frame: dict[str, float] = field(default_factory=dict)


@dataclass
class Judgment:
    rollout_id: str
    candidate: str
    healthy: bool
    reasons: list[str]
    candidate_stats: VersionStats | None
    rest_stats: VersionStats | None
    versions: dict[str, VersionStats]
    refusals: dict[str, str]  # device -> what it said when it refused or rolled back the candidate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_stats(con: Any, since: datetime, version: str, *, others: bool = False) -> VersionStats:
    """Stats of the heartbeats and captures since `since` of model `version` (or, with `others`, of every other)."""
    where, args = ("model_version <> ?" if others else "model_version = ?"), [version]
    hb = con.execute(f"""
        WITH h AS (
            SELECT device, sent_at, fps, inference_ms_p50, inference_ms_p99, model_version,
                   errors - lag(errors) OVER (PARTITION BY device ORDER BY sent_at) AS new_errors
            FROM heartbeats WHERE sent_at >= ?)
        SELECT list(DISTINCT device ORDER BY device), count(*), avg(fps), median(inference_ms_p50),
               avg(inference_ms_p99), coalesce(sum(greatest(new_errors, 0)), 0)
        FROM h WHERE {where}""", [since, *args]).fetchone()
    span = con.execute(f"""
        SELECT coalesce(sum(epoch(last) - epoch(first)), 0) / 3600.0 FROM (
            SELECT device, min(sent_at) AS first, max(sent_at) AS last FROM heartbeats
            WHERE sent_at >= ? AND {where} GROUP BY device)""", [since, *args]).fetchone()[0]
    captures = con.execute(f"SELECT count(*) FROM captures WHERE captured_at >= ? AND {where}",
                           [since, *args]).fetchone()[0]
    by_trigger = dict(con.execute(f"""
        SELECT t.reason, count(*) FROM captures c JOIN triggers t ON t.capture_id = c.id
        WHERE c.captured_at >= ? AND {where.replace('model_version', 'c.model_version')} GROUP BY t.reason""",
                                  [since, *args]).fetchall())
    sampled = con.execute(f"""
        SELECT count(*) FROM captures c JOIN triggers t ON t.capture_id = c.id AND t.reason = 'random'
        WHERE c.captured_at >= ? AND {where.replace('model_version', 'c.model_version')}""",
                          [since, *args]).fetchone()[0]
    per_class = dict(con.execute(f"""
        SELECT coalesce(d.class_name, 'class ' || d.class_id::VARCHAR), count(*)
        FROM captures c JOIN triggers t ON t.capture_id = c.id AND t.reason = 'random'
        JOIN detections d ON d.capture_id = c.id
        WHERE c.captured_at >= ? AND {where.replace('model_version', 'c.model_version')} GROUP BY 1""",
                                 [since, *args]).fetchall())
    return VersionStats(
        devices=list(hb[0] or []), heartbeats=int(hb[1]), fps=_round(hb[2]), latency_p50_ms=_round(hb[3]),
        latency_p99_ms=_round(hb[4]), errors=int(hb[5]), device_hours=round(float(span), 4), captures=int(captures),
        uploads_per_hour={k: round(v / span, 2) if span > 0 else None for k, v in sorted(by_trigger.items())},
        sampled_frames=int(sampled),
        detections_per_frame={k: round(v / sampled, 4) for k, v in sorted(per_class.items())} if sampled else {},
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _refusals(con: Any, since: datetime, candidate: str) -> dict[str, str]:
    """Devices whose latest word on the candidate, since `since`, was a refusal or a rollback of their own."""
    rows = con.execute("""
        SELECT device, arg_max(update_state, sent_at), arg_max(update_detail, sent_at) FROM heartbeats
        WHERE sent_at >= ? AND update_target = ? GROUP BY device ORDER BY device""", [since, candidate]).fetchall()
    return {device: f"{state}: {detail or 'no detail'}" for device, state, detail in rows
            if state in ("refused", "rolled_back")}


def judge(ws: Workspace, rollout: Rollout, policy: CanaryPolicy = CanaryPolicy()) -> Judgment:
    """Healthy or not, and why, for the rollout's model against every other version seen since it started."""
    with ws.catalog.connect() as con:
        since = rollout.started_at
        candidate = _version_stats(con, since, rollout.model_id)
        rest = _version_stats(con, since, rollout.model_id, others=True)
        seen = [v for (v,) in con.execute("SELECT DISTINCT model_version FROM heartbeats WHERE sent_at >= ? "
                                          "ORDER BY 1", [since]).fetchall()]
        versions = {v: candidate if v == rollout.model_id else _version_stats(con, since, v) for v in seen}
        refusals = _refusals(con, since, rollout.model_id)
    reasons = _verdict(candidate, rest, refusals, policy)
    return Judgment(rollout.id, rollout.model_id, not reasons, reasons or ["every check passed"],
                    candidate, rest if rest.heartbeats else None, versions, refusals)


def _verdict(c: VersionStats, r: VersionStats, refusals: dict[str, str], p: CanaryPolicy) -> list[str]:
    reasons = [f"{device} {what}" for device, what in refusals.items()]
    if c.heartbeats < p.min_heartbeats:
        reasons.append(f"only {c.heartbeats} heartbeat(s) from devices running it so far (need {p.min_heartbeats})")
        return reasons
    if c.errors:
        reasons.append(f"{c.errors} frame(s) failed to detect on it")
    if not r.heartbeats:
        return reasons  # nothing to compare with: 100% canary, or the rest of the fleet is silent
    if c.fps is not None and r.fps and c.fps < p.min_fps_ratio * r.fps:
        reasons.append(f"fps {c.fps} against {r.fps} on the rest of the fleet (below {p.min_fps_ratio:g}x)")
    if c.latency_p99_ms is not None and r.latency_p99_ms is not None and \
            c.latency_p99_ms > p.max_p99_ratio * r.latency_p99_ms + p.p99_slack_ms:
        reasons.append(f"inference p99 {c.latency_p99_ms} ms against {r.latency_p99_ms} ms on the rest "
                       f"(above {p.max_p99_ratio:g}x + {p.p99_slack_ms:g} ms)")
    if c.captures >= p.min_captures and r.captures >= p.min_captures:
        for trigger, rate in c.uploads_per_hour.items():
            theirs = r.uploads_per_hour.get(trigger)
            if rate is not None and theirs and rate > p.max_upload_ratio * theirs:
                reasons.append(f"{trigger} uploads {rate}/h per device against {theirs}/h on the rest "
                               f"(above {p.max_upload_ratio:g}x)")
    if c.sampled_frames >= p.min_sampled_frames and r.sampled_frames >= p.min_sampled_frames:
        for name, theirs in r.detections_per_frame.items():
            mine = c.detections_per_frame.get(name, 0.0)
            if theirs >= p.min_class_rate and mine < p.min_class_ratio * theirs:
                reasons.append(f"{name}: {mine} detections per frame against {theirs} on the rest "
                               f"(below {p.min_class_ratio:g}x)")
    return reasons


def device_table(ws: Workspace) -> list[dict[str, Any]]:
    """Each registered device: its canary bucket, what it should run now, and what it last said it runs."""
    from feedback.rollout.deployments import desired_state
    from feedback.rollout.desired import answer_for, canary_bucket

    with ws.catalog.connect() as con:
        state = desired_state(con)
        devices = [d for (d,) in con.execute("SELECT name FROM devices WHERE revoked_at IS NULL ORDER BY name").fetchall()]
        last = {row[0]: row[1:] for row in con.execute("""
            SELECT device, arg_max(model_version, sent_at), arg_max(update_state, sent_at),
                   arg_max(update_detail, sent_at), max(sent_at) FROM heartbeats GROUP BY device""").fetchall()}
    out = []
    for device in devices:
        answer = answer_for(state, device)
        running, update, detail, seen = last.get(device, (None, None, None, None))
        out.append({"device": device, "bucket": round(canary_bucket(device), 3), "reason": answer.reason,
                    "desired": answer.model_version, "running": running, "update_state": update,
                    "update_detail": detail, "last_heartbeat": seen.isoformat() if seen else None})
    return out
