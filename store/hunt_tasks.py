"""The rare-class pass's questions in the catalog: one per candidate box, its verdict and what it cost a person.

A "no" is a verified hard negative (the probe learns from it); nothing here is a label.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from store.review_tasks import CANDIDATES_SQL


@dataclass(frozen=True)
class BoxCandidate:
    """A box the champion's scan found in a capture still waiting for review, as a question could show it."""

    ref: str  # <capture id>/<idx>: also the box's embeddings ref
    capture_id: str
    class_id: int  # what the scan called it
    confidence: float
    box: tuple[float, float, float, float]  # xyxy px


@dataclass(frozen=True)
class HuntRow:
    id: str
    capture_id: str
    class_id: int
    box: tuple[float, float, float, float]
    project: str | None
    task_id: str | None
    status: str


def unasked_boxes(con: duckdb.DuckDBPyConnection, model: str) -> list[BoxCandidate]:
    """The scanned boxes of every review candidate that no hunt has asked about yet, by ref."""
    rows = con.execute(
        f"SELECT b.capture_id, b.idx, b.class_id, b.confidence, b.x1, b.y1, b.x2, b.y2 FROM box_candidates b "
        f"JOIN ({CANDIDATES_SQL}) c ON c.id = b.capture_id WHERE b.model = ? AND NOT EXISTS "
        "(SELECT 1 FROM hunt_tasks h WHERE h.id = b.capture_id || '/' || b.idx) ORDER BY b.capture_id, b.idx",
        [model]).fetchall()
    return [BoxCandidate(f"{c}/{i}", c, int(k), float(conf), (x1, y1, x2, y2)) for c, i, k, conf, x1, y1, x2, y2 in rows]


def add_hunt_tasks(con: duckdb.DuckDBPyConnection, reviewer: str, project: str | None, class_id: int,
                   at: datetime, asked: Sequence[tuple[str, str, tuple[float, ...], float, str]]) -> None:
    """Record questions a reviewer took: (ref, capture id, box, score, task id) each."""
    con.executemany("INSERT INTO hunt_tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pushed', ?, NULL, NULL, NULL)",
                    [(ref, capture, class_id, *box, score, reviewer, project, task, at)
                     for ref, capture, box, score, task in asked])


def open_hunts(con: duckdb.DuckDBPyConnection, reviewer: str) -> list[HuntRow]:
    rows = con.execute("SELECT id, capture_id, class_id, x1, y1, x2, y2, project, task_id, status FROM hunt_tasks "
                       "WHERE reviewer = ? AND status = 'pushed' ORDER BY pushed_at, id", [reviewer]).fetchall()
    return [HuntRow(i, c, k, (x1, y1, x2, y2), p, t, s) for i, c, k, x1, y1, x2, y2, p, t, s in rows]


def resolve_hunt(con: duckdb.DuckDBPyConnection, hunt_id: str, status: str, at: datetime,
                 effort: dict[str, Any] | None) -> None:
    con.execute("UPDATE hunt_tasks SET status = ?, resolved_at = ?, effort = ?, effort_s = ? WHERE id = ?",
                [status, at, json.dumps(effort) if effort else None, effort["seconds"] if effort else None, hunt_id])


def hard_negative_refs(con: duckdb.DuckDBPyConnection, class_ids: Sequence[int]) -> list[str]:
    """Boxes a person said are not the class they were asked about: the probe's verified negatives."""
    return [r for (r,) in con.execute("SELECT id FROM hunt_tasks WHERE status = 'no' AND list_contains(?, class_id) "
                                      "ORDER BY id", [list(class_ids)]).fetchall()]


def hunt_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return dict(con.execute("SELECT status, count(*) FROM hunt_tasks GROUP BY status").fetchall())


def hunt_seconds(con: duckdb.DuckDBPyConnection) -> float:
    """People's time spent answering the pass's questions so far."""
    return float(con.execute("SELECT coalesce(sum(effort_s), 0) FROM hunt_tasks").fetchall()[0][0])


def confirmed_boxes(con: duckdb.DuckDBPyConnection, capture_id: str) -> list[tuple[int, tuple[float, ...]]]:
    """(class id, xyxy) of each box a person said yes to in a capture: part of what its full review showed."""
    return [(k, (x1, y1, x2, y2)) for k, x1, y1, x2, y2 in con.execute(
        "SELECT class_id, x1, y1, x2, y2 FROM hunt_tasks WHERE capture_id = ? AND status = 'yes' ORDER BY id",
        [capture_id]).fetchall()]
