"""Canary judgment: how the rollout's model does on its devices against the rest of the fleet, from the
heartbeats and captures loaded into the catalog since the rollout started.

Per model version: fps, inference latency p50/p99, detector errors, uploads per hour by trigger, and
detections per frame by class (from the random sample only: the other triggers pick frames on purpose).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from store.rollouts import Rollout, update_reports, version_activity, versions_seen
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


def _version_stats(con: duckdb.DuckDBPyConnection, since: datetime, version: str, *,
                   others: bool = False) -> VersionStats:
    """Stats of the heartbeats and captures since `since` of model `version` (or, with `others`, of every other)."""
    a = version_activity(con, since, version, others=others)
    sampled = a.sampled_frames
    return VersionStats(
        devices=a.devices, heartbeats=a.heartbeats, fps=_round(a.fps), latency_p50_ms=_round(a.latency_p50_ms),
        latency_p99_ms=_round(a.latency_p99_ms), errors=a.errors, device_hours=round(a.device_hours, 4),
        captures=a.captures,
        uploads_per_hour={k: round(v / a.device_hours, 2) if a.device_hours > 0 else None
                          for k, v in sorted(a.uploads_by_trigger.items())},
        sampled_frames=sampled,
        detections_per_frame={k: round(v / sampled, 4) for k, v in sorted(a.detections_by_class.items())}
        if sampled else {},
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _refusals(con: duckdb.DuckDBPyConnection, since: datetime, candidate: str) -> dict[str, str]:
    """Devices whose latest word on the candidate, since `since`, was a refusal or a rollback of their own."""
    return {device: f"{state}: {detail or 'no detail'}"
            for device, state, detail in update_reports(con, since, candidate) if state in ("refused", "rolled_back")}


def judge(ws: Workspace, rollout: Rollout, policy: CanaryPolicy = CanaryPolicy()) -> Judgment:
    """Healthy or not, and why, for the rollout's model against every other version seen since it started."""
    with ws.catalog.connect() as con:
        since = rollout.started_at
        candidate = _version_stats(con, since, rollout.model_id)
        rest = _version_stats(con, since, rollout.model_id, others=True)
        versions = {v: candidate if v == rollout.model_id else _version_stats(con, since, v)
                    for v in versions_seen(con, since)}
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
