"""Review tasks, the candidates they are chosen from (captures no person has been asked about yet) and the boxes
scanned in them. Selection, the cycle's skip check and the report's review pool all use this one candidates rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

# Candidates: captures whose image has no review task and no verified label (one capture per image).
CANDIDATES_SQL = """
    WITH excluded AS (
        SELECT c.sha256 FROM review_tasks r JOIN captures c ON c.id = r.capture_id
        UNION SELECT image_sha256 FROM labels WHERE status = 'verified'
    )
    SELECT id, sha256 FROM captures WHERE sha256 NOT IN (SELECT sha256 FROM excluded)
    QUALIFY row_number() OVER (PARTITION BY sha256 ORDER BY captured_at, id) = 1
"""


def count_candidates(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute(f"SELECT count(*) FROM ({CANDIDATES_SQL})").fetchall()[0][0]


def candidates_loaded_by(con: duckdb.DuckDBPyConnection, at: datetime) -> list[str]:
    """Ids of the candidates that were in the catalog at `at` (later uploads were not on offer then)."""
    return [c for (c,) in con.execute(
        f"SELECT k.id FROM ({CANDIDATES_SQL}) k JOIN captures c ON c.id = k.id WHERE c.loaded_at <= ? ORDER BY k.id",
        [at]).fetchall()]


def unscanned_candidates(con: duckdb.DuckDBPyConnection, model: str) -> list[tuple[str, str]]:
    """(capture id, image sha256) of each candidate `model` has not scanned for boxes yet."""
    return con.execute(
        f"SELECT c.id, c.sha256 FROM ({CANDIDATES_SQL}) c WHERE NOT EXISTS (SELECT 1 FROM box_scans s "
        "WHERE s.capture_id = c.id AND s.model = ?) ORDER BY c.id", [model]).fetchall()


def count_pushed(con: duckdb.DuckDBPyConnection, reviewer: str | None = None) -> int:
    """Review tasks sent to people (to `reviewer` only, unless None) and not yet answered."""
    return con.execute("SELECT count(*) FROM review_tasks WHERE status = 'pushed' AND (?::VARCHAR IS NULL "
                       "OR reviewer = ?)", [reviewer, reviewer]).fetchall()[0][0]


def candidate_signals(con: duckdb.DuckDBPyConnection, trigger_weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per candidate, ordered by id: id, margin (max over its detections of 1 - |2·conf - 1|), its detections' count
    and summed doubt (1 - conf), the sum of `trigger_weights` over its upload reasons, operator flag, predicted
    classes and the device's class evidence."""
    con.register("trigger_weights", pa.table({"reason": list(trigger_weights),
                                              "weight": list(trigger_weights.values())}))
    columns = con.execute(
        f"""
        WITH candidates AS ({CANDIDATES_SQL}),
        det AS (
            SELECT capture_id, max(1 - abs(2 * confidence - 1)) AS margin, list(DISTINCT class_id) AS predicted,
                   count(*) AS shown, sum(1 - confidence) AS doubt
            FROM detections GROUP BY capture_id
        ),
        trg AS (
            SELECT t.capture_id, sum(coalesce(w.weight, 0)) AS weight, bool_or(t.reason = 'operator') AS flagged
            FROM triggers t LEFT JOIN trigger_weights w USING (reason)
            GROUP BY t.capture_id
        )
        SELECT c.id, coalesce(det.margin, 0) AS margin, coalesce(det.shown, 0) AS shown,
               coalesce(det.doubt, 0) AS doubt, coalesce(trg.weight, 0) AS triggers,
               coalesce(trg.flagged, false) AS flagged, coalesce(det.predicted, []) AS predicted,
               cap.class_evidence AS evidence
        FROM candidates c
        JOIN captures cap ON cap.id = c.id
        LEFT JOIN det ON det.capture_id = c.id
        LEFT JOIN trg ON trg.capture_id = c.id
        ORDER BY c.id
        """
    ).fetchnumpy()
    con.unregister("trigger_weights")
    return {
        "id": np.asarray(columns["id"], dtype=object),
        "margin": np.asarray(columns["margin"], dtype=np.float32),
        "shown": np.asarray(columns["shown"], dtype=np.int64),  # boxes the task will show (the pre-annotation)
        "doubt": np.asarray(columns["doubt"], dtype=np.float32),  # sum over them of 1 - confidence
        "triggers": np.asarray(columns["triggers"], dtype=np.float32),
        "flagged": np.asarray(columns["flagged"], dtype=bool),
        "predicted": np.asarray(columns["predicted"], dtype=object),
        "evidence": np.asarray(columns["evidence"], dtype=object),
    }


def verified_counts(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """Boxes per catalog class in the latest verified label of every real image (0 for classes without any):
    what makes a class rare for selection."""
    rows = con.execute(
        """
        WITH latest AS (
            SELECT l.id FROM labels l JOIN images i ON i.sha256 = l.image_sha256
            WHERE l.status = 'verified' AND i.origin = 'real'
            QUALIFY row_number() OVER (PARTITION BY l.image_sha256 ORDER BY l.created_at DESC, l.id) = 1
        )
        SELECT k.id, count(b.label_id) FROM classes k
        LEFT JOIN (SELECT b.* FROM label_boxes b JOIN latest l ON l.id = b.label_id) b ON b.class_id = k.id
        GROUP BY k.id ORDER BY k.id
        """).fetchall()
    return {int(c): int(n) for c, n in rows}


def add_box_scans(con: duckdb.DuckDBPyConnection, boxes: Sequence[tuple], scans: Sequence[tuple]) -> None:
    """Store scanned candidate boxes (capture id, model, idx, class, confidence, x1, y1, x2, y2) and the scan marks
    (capture id, model, boxes, scanned at) in one transaction: a scan is marked only with all its boxes."""
    con.begin()
    if boxes:
        con.executemany("INSERT INTO box_candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", boxes)
    if scans:
        con.executemany("INSERT INTO box_scans VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", scans)
    con.commit()


def review_captures(con: duckdb.DuckDBPyConnection, capture_ids: Sequence[str],
                    ) -> dict[str, tuple[str, str, int, int, str | None, int | None, str | None]]:
    """capture id -> (id, sha256, width, height, source uri, source frame, model version) of those in the catalog."""
    return {r[0]: r for r in con.execute(
        "SELECT id, sha256, frame_width, frame_height, source_uri, source_frame, model_version FROM captures "
        "WHERE list_contains(?, id)", [list(capture_ids)]).fetchall()}


def review_detections(con: duckdb.DuckDBPyConnection, capture_ids: Sequence[str],
                      ) -> list[tuple[str, int, float, float, float, float, float]]:
    """(capture id, class, confidence, x1, y1, x2, y2) of the captures' uploaded detections, in their order."""
    return con.execute(
        "SELECT capture_id, class_id, confidence, x1, y1, x2, y2 FROM detections "
        "WHERE list_contains(?, capture_id) ORDER BY capture_id, idx", [list(capture_ids)]).fetchall()


def pushed_among(con: duckdb.DuckDBPyConnection, capture_ids: Sequence[str]) -> set[str]:
    """Those of `capture_ids` that have a review task already."""
    return {c for (c,) in con.execute("SELECT capture_id FROM review_tasks WHERE list_contains(?, capture_id)",
                                      [list(capture_ids)]).fetchall()}


def add_pushed_tasks(con: duckdb.DuckDBPyConnection, reviewer: str, project: str | None, strategy: str,
                     pushed_at: datetime, tasks: Sequence[tuple[str, str, float, dict[str, float]]]) -> None:
    """Record (capture id, task id, score, score parts) of tasks `reviewer` took, all in one transaction."""
    con.begin()
    con.executemany(
        "INSERT INTO review_tasks (capture_id, reviewer, project, task_id, strategy, score, score_parts, status,"
        " pushed_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pushed', ?) ON CONFLICT DO NOTHING",
        [[capture, reviewer, project, task, strategy, float(score), json.dumps(parts), pushed_at]
         for capture, task, score, parts in tasks],
    )
    con.commit()


def reviewer_tasks(con: duckdb.DuckDBPyConnection, reviewer: str) -> list[tuple[str, str | None, str]]:
    """(capture id, project, task id) of every task pushed to `reviewer`, oldest first."""
    return con.execute("SELECT capture_id, project, task_id FROM review_tasks WHERE reviewer = ? "
                       "ORDER BY pushed_at, capture_id", [reviewer]).fetchall()


def task_states(con: duckdb.DuckDBPyConnection, reviewer: str) -> dict[tuple[str, str], tuple]:
    """(capture id, task id) -> (status, project, current label hash, sha256, width, height, media type) of
    `reviewer`'s tasks: what a pull compares a verdict with."""
    return {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT t.capture_id, t.task_id, t.status, t.project, l.label_hash, c.sha256, c.frame_width, "
        "c.frame_height, c.media_type FROM review_tasks t JOIN captures c ON c.id = t.capture_id "
        "LEFT JOIN labels l ON l.id = t.label_id WHERE t.reviewer = ?", [reviewer]).fetchall()}


def cancel_task(con: duckdb.DuckDBPyConnection, capture_id: str, at: datetime) -> None:
    con.execute("UPDATE review_tasks SET status = 'cancelled', resolved_at = ? WHERE capture_id = ?", [at, capture_id])


def resolve_task(con: duckdb.DuckDBPyConnection, capture_id: str, status: str, at: datetime, label_id: str,
                 effort: dict[str, Any] | None = None) -> None:
    """Record a task's verdict, the label it became and what it cost a person (`effort["seconds"]`)."""
    con.execute("UPDATE review_tasks SET status = ?, resolved_at = ?, label_id = ?, effort = ?, effort_s = ? "
                "WHERE capture_id = ?", [status, at, label_id, json.dumps(effort) if effort else None,
                                         effort["seconds"] if effort else None, capture_id])


@dataclass(frozen=True)
class TaskCost:
    """A resolved task's verdict and what it cost: seconds, their source, the actions per class."""

    capture_id: str
    status: str
    resolved_at: datetime
    effort: dict[str, Any] | None  # None: resolved before effort was measured (migration 0012)


def task_costs(con: duckdb.DuckDBPyConnection, label_ids: Sequence[str] | None = None,
               since: datetime | None = None) -> list[TaskCost]:
    """Resolved (verified or skipped) tasks with their effort: those that became `label_ids`, or resolved since."""
    rows = con.execute(
        "SELECT capture_id, status, resolved_at, effort FROM review_tasks WHERE status IN ('verified', 'skipped') "
        "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], label_id)) "
        "AND (?::TIMESTAMPTZ IS NULL OR resolved_at >= ?) ORDER BY resolved_at, capture_id",
        [label_ids, label_ids, since, since]).fetchall()
    return [TaskCost(c, s, at, json.loads(e) if e else None) for c, s, at, e in rows]


def scanned_confidence(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, float]:
    """Per scanned capture, the summed confidence of the boxes `model` found at scan time (an expected count of
    the objects it sees there, down to the scan's low threshold)."""
    return dict(con.execute("SELECT capture_id, sum(confidence) FROM box_candidates WHERE model = ? "
                            "GROUP BY capture_id", [model]).fetchall())
