"""What a cycle's review left in the catalog, read back for its report: verdicts, their boxes, what was shown.

Typed reads over labels, label_boxes, detections, review_tasks and captures, so the report writes no SQL of its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np


def review_verdicts_between(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime],
                            ) -> list[tuple[str, str, str]]:
    """(label id, capture id, status) of every review verdict stored in `window`: a pull stores each new verdict
    as a label at that moment (a task's resolved_at is the reviewer's clock, the oracle's file time)."""
    rows = con.execute("SELECT id, provenance, status FROM labels WHERE source = 'review' "
                       "AND created_at BETWEEN ? AND ? ORDER BY created_at, id", list(window)).fetchall()
    out = []
    for label, provenance, status in rows:
        capture = json.loads(provenance).get("capture") if provenance else None
        if capture:
            out.append((label, capture, status))
    return out


def label_boxes(con: duckdb.DuckDBPyConnection, label_id: str) -> np.ndarray:
    """A label's boxes as (N, 5) rows of class id, x1, y1, x2, y2 in pixels, in their stored order."""
    return np.asarray(con.execute("SELECT class_id, x1, y1, x2, y2 FROM label_boxes WHERE label_id = ? ORDER BY idx",
                                  [label_id]).fetchall(), np.float64).reshape(-1, 5)


def shown_detections(con: duckdb.DuckDBPyConnection, capture_id: str) -> np.ndarray:
    """The boxes a capture's device uploaded (its pre-annotation) as (N, 6) rows of class id, confidence, x1, y1,
    x2, y2."""
    return np.asarray(con.execute("SELECT class_id, confidence, x1, y1, x2, y2 FROM detections WHERE capture_id = ? "
                                  "ORDER BY idx", [capture_id]).fetchall(), np.float64).reshape(-1, 6)


def oracle_answer_folders(con: duckdb.DuckDBPyConnection, labels: Sequence[str]) -> set[str]:
    """Folders of the oracle's answer files behind `labels` (its provenance names each file it answered from)."""
    rows = con.execute("SELECT provenance FROM labels WHERE list_contains(?, id) AND annotator = 'oracle'",
                       [list(labels)]).fetchall()
    folders = set()
    for (provenance,) in rows:
        annotation = json.loads(provenance or "{}").get("annotation")
        if annotation:
            folders.add(str(Path(annotation).parent))
    return folders


def class_boxes(con: duckdb.DuckDBPyConnection, labels: Sequence[str], class_id: int) -> int:
    """Boxes of `class_id` in the labels `labels`."""
    return con.execute("SELECT count(*) FROM label_boxes WHERE list_contains(?, label_id) AND class_id = ?",
                       [list(labels), class_id]).fetchone()[0]


def first_pushed_at(con: duckdb.DuckDBPyConnection, captures: Sequence[str]) -> datetime | None:
    """When the first of `captures` was pushed for review."""
    return con.execute("SELECT min(pushed_at) FROM review_tasks WHERE list_contains(?, capture_id)",
                       [list(captures)]).fetchone()[0]


def capture_sources(con: duckdb.DuckDBPyConnection, captures: Sequence[str],
                    ) -> list[tuple[str, str | None, int | None]]:
    """(capture id, source uri, source frame) of `captures`: where each frame came from."""
    return con.execute("SELECT id, source_uri, source_frame FROM captures WHERE list_contains(?, id)",
                       [list(captures)]).fetchall()


@dataclass(frozen=True)
class PushedTask:
    """A capture's review task as selection pushed it: its priority, the parts it was made of, where it stands."""

    score: float | None
    parts: dict[str, float]  # score part -> its value, as selection recorded them
    status: str
    sha256: str  # the capture's frame


def pushed_tasks(con: duckdb.DuckDBPyConnection, captures: Sequence[str]) -> dict[str, PushedTask]:
    """The review tasks of `captures` that exist, by capture id."""
    rows = con.execute("SELECT t.capture_id, t.score, t.score_parts, t.status, c.sha256 FROM review_tasks t "
                       "JOIN captures c ON c.id = t.capture_id WHERE list_contains(?, t.capture_id)",
                       [list(captures)]).fetchall()
    return {capture: PushedTask(score, json.loads(parts) if parts else {}, status, sha)
            for capture, score, parts, status, sha in rows}
