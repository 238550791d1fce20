"""Synthesis lineage in the catalog: each generator run, the fate of every image it made, and the report's reads.

Kept images are ordinary `images` rows (store.labels writes them); here are the runs, the outcomes, and the reads
over synthetic images' lineage that the filters and the report need.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from edge.protocol import utc_now


@dataclass(frozen=True)
class Outcome:
    """One image a run made: kept (its stored sha256) or rejected (why, a thumbnail, its lineage)."""

    idx: int
    kept: bool
    image_sha256: str | None = None
    reason: str | None = None
    detail: str | None = None
    thumb_sha256: str | None = None
    lineage: dict[str, Any] | None = None


def start_run(con: duckdb.DuckDBPyConnection, run_id: str, generator: str, cluster_id: str | None,
              target_class: int, request: dict[str, Any], embedder: str | None) -> None:
    con.execute(
        "INSERT INTO synthesis_runs (id, generator, cluster_id, target_class, request, embedder, started_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [run_id, generator, cluster_id, target_class, json.dumps(request, default=str), embedder, utc_now()],
    )


def add_outcomes(con: duckdb.DuckDBPyConnection, run_id: str, outcomes: Sequence[Outcome]) -> None:
    """Record a batch's outcomes (inside the caller's transaction, beside the kept images' rows)."""
    if not outcomes:  # a batch a generator made nothing of: DuckDB refuses an empty executemany
        return
    now = utc_now()
    con.executemany("INSERT INTO synthesis_outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[run_id, o.idx, o.kept, o.image_sha256, o.reason, o.detail, o.thumb_sha256,
                      None if o.lineage is None else json.dumps(o.lineage, default=str), now] for o in outcomes])


def finish_run(con: duckdb.DuckDBPyConnection, run_id: str, *, kept: int, rejected: int, cost_usd: float,
               domain_gap: dict[str, Any] | None) -> None:
    con.execute(
        "UPDATE synthesis_runs SET finished_at = ?, n_kept = ?, n_rejected = ?, cost_usd = ?, domain_gap = ? "
        "WHERE id = ?",
        [utc_now(), kept, rejected, cost_usd, json.dumps(domain_gap) if domain_gap else None, run_id],
    )


def synthetic_phashes(con: duckdb.DuckDBPyConnection) -> list[tuple[str, list[str]]]:
    """(sha256, hex perceptual hashes of its new objects) of every synthetic image kept, by sha256."""
    rows = con.execute(
        "SELECT sha256, lineage->>'$.filters.phash' FROM images WHERE origin = 'synthetic' ORDER BY sha256"
    ).fetchall()
    return [(sha, json.loads(found) if found else []) for sha, found in rows]


def image_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """(width, height) of every catalogued image, by sha256."""
    return {sha: (w, h) for sha, w, h in con.execute("SELECT sha256, width, height FROM images").fetchall()}


def image_cameras(con: duckdb.DuckDBPyConnection, shas: Sequence[str]) -> dict[str, str]:
    """`device/camera` that captured each image (the first, when several did); imported images are absent."""
    return dict(con.execute("SELECT sha256, min(device || '/' || camera) FROM captures WHERE list_contains(?, sha256) "
                            "GROUP BY sha256", [list(shas)]).fetchall())


# (id, generator, cluster_id, target_class, started_at, n_kept, n_rejected, cost_usd, domain_gap JSON)
RunRow = tuple[str, str, str | None, int, datetime, int | None, int | None, float | None, str | None]


def all_runs(con: duckdb.DuckDBPyConnection) -> list[RunRow]:
    return con.execute(
        "SELECT id, generator, cluster_id, target_class, started_at, n_kept, n_rejected, cost_usd, domain_gap "
        "FROM synthesis_runs ORDER BY started_at, id").fetchall()


def outcome_reasons(con: duckdb.DuckDBPyConnection) -> list[tuple[str | None, int, bool, str | None]]:
    """(cluster_id, target_class, kept, reason) of every image any run made."""
    return con.execute(
        "SELECT r.cluster_id, r.target_class, o.kept, o.reason FROM synthesis_outcomes o "
        "JOIN synthesis_runs r ON r.id = o.run_id").fetchall()


def count_hard_synthetic(con: duckdb.DuckDBPyConnection) -> int:
    """Synthetic images kept that the champion got wrong when the filters asked it (the ones that teach most)."""
    return con.execute(
        "SELECT count(*) FROM images WHERE origin = 'synthetic' AND "
        "list_contains(CAST(json_extract(lineage, '$.filters.champion[*].hard') AS BOOLEAN[]), true)").fetchone()[0]


def latest_dataset_mix(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, str | None] | None:
    """(version, n_train, n_synthetic, params JSON) of the newest data set, or None before the first."""
    return con.execute("SELECT version, n_train, n_synthetic, params FROM datasets ORDER BY version DESC "
                       "LIMIT 1").fetchone()


def outcome_images(con: duckdb.DuckDBPyConnection) -> list[tuple[str | None, int, bool, str | None, str | None,
                                                                  str | None]]:
    """(cluster_id, target_class, kept, reason, image or thumbnail sha256, lineage JSON) of every outcome,
    newest first: what the report's contact sheets show."""
    return con.execute(
        "SELECT r.cluster_id, r.target_class, o.kept, o.reason, coalesce(o.image_sha256, o.thumb_sha256), "
        "coalesce(i.lineage, o.lineage) FROM synthesis_outcomes o JOIN synthesis_runs r ON r.id = o.run_id "
        "LEFT JOIN images i ON i.sha256 = o.image_sha256 "
        "ORDER BY o.created_at DESC, o.run_id, o.idx").fetchall()


@dataclass(frozen=True)
class SynthesisRun:
    id: str
    generator: str
    cluster_id: str | None  # None: asked for a class, not made for a failure cluster
    target_class: int
    n_kept: int | None  # None while the run has not finished
    n_rejected: int | None
    cost_usd: float | None


@dataclass(frozen=True)
class OutcomeSample:
    """One generated image: kept (its stored image) or rejected (why, and a small thumbnail where it had pixels)."""

    idx: int
    image_sha256: str | None
    reason: str | None
    detail: str | None
    thumb_sha256: str | None
    lineage: dict[str, Any]  # prompt or edit instruction, filter scores, the boxes it added


def synthesis_runs_between(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime]) -> list[SynthesisRun]:
    """Runs started in `window`, oldest first."""
    rows = con.execute("SELECT id, generator, cluster_id, target_class, n_kept, n_rejected, cost_usd "
                       "FROM synthesis_runs WHERE started_at BETWEEN ? AND ? ORDER BY started_at", list(window))
    return [SynthesisRun(*r) for r in rows.fetchall()]


def rejection_reasons(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """Rejected images of a run by reason, the commonest first."""
    return dict(con.execute("SELECT reason, count(*) FROM synthesis_outcomes WHERE run_id = ? AND NOT kept "
                            "GROUP BY reason ORDER BY count(*) DESC", [run_id]).fetchall())


def outcome_samples(con: duckdb.DuckDBPyConnection, run_id: str, kept: bool, limit: int) -> list[OutcomeSample]:
    """A run's first `limit` kept (or rejected) images; a kept one's lineage is its image's (the stored truth)."""
    rows = con.execute(
        "SELECT o.idx, o.image_sha256, o.reason, o.detail, o.thumb_sha256, coalesce(i.lineage, o.lineage) "
        "FROM synthesis_outcomes o LEFT JOIN images i ON i.sha256 = o.image_sha256 "
        "WHERE o.run_id = ? AND o.kept = ? ORDER BY o.idx LIMIT ?", [run_id, kept, limit]).fetchall()
    return [OutcomeSample(idx, sha, reason, detail, thumb, json.loads(lineage) if lineage else {})
            for idx, sha, reason, detail, thumb, lineage in rows]


def latest_label_boxes(con: duckdb.DuckDBPyConnection, image_sha256: str) -> list[tuple[float, float, float, float]]:
    """The boxes (x1, y1, x2, y2 in pixels) of an image's newest label, in their stored order."""
    return con.execute(
        "SELECT b.x1, b.y1, b.x2, b.y2 FROM labels l JOIN label_boxes b ON b.label_id = l.id "
        "WHERE l.image_sha256 = ? AND l.id = (SELECT id FROM labels WHERE image_sha256 = ? "
        "ORDER BY created_at DESC LIMIT 1) ORDER BY b.idx", [image_sha256, image_sha256]).fetchall()


def synthetic_kept_between(con: duckdb.DuckDBPyConnection, class_id: int, window: tuple[datetime, datetime]) -> int:
    """Synthetic images kept for training by the synthesis runs for `class_id` started in `window`."""
    return int(con.execute("SELECT coalesce(sum(n_kept), 0) FROM synthesis_runs WHERE target_class = ? "
                           "AND started_at BETWEEN ? AND ?", [class_id, *window]).fetchone()[0])
