"""Failure records in the catalog: what the deployed model got wrong on a reviewed capture, one row per mistake.

Written by a review pull (`feedback.review.failures.record_failures`), read by the failures summary and selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import duckdb
import numpy as np

# A failures row: id, capture id, label id, model version, kind, true class, predicted class, confidence, iou,
# x1, y1, x2, y2 (the crop box), created at.
FailureRow = tuple[str, str, str, str | None, str, int | None, int | None, float | None, float | None,
                   float, float, float, float, datetime]


def capture_frame(con: duckdb.DuckDBPyConnection, capture_id: str) -> tuple[str, str | None] | None:
    """(image sha256, model version) of a capture, or None when the catalog has no such capture."""
    return con.execute("SELECT sha256, model_version FROM captures WHERE id = ?", [capture_id]).fetchone()


def label_verdict(con: duckdb.DuckDBPyConnection, label_id: str) -> tuple[str, str] | None:
    """(image sha256, status) of a label, or None when the catalog has no such label."""
    return con.execute("SELECT image_sha256, status FROM labels WHERE id = ?", [label_id]).fetchone()


def replace_failures(con: duckdb.DuckDBPyConnection, capture_id: str, rows: Sequence[FailureRow]) -> None:
    """Make `rows` the capture's only failure records: a re-review's latest verdict is the truth.

    Runs in the caller's transaction, so a verdict and its failures land together."""
    con.execute("DELETE FROM failures WHERE capture_id = ?", [capture_id])
    if rows:
        con.executemany("INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [list(r) for r in rows])


def failure_counts(con: duckdb.DuckDBPyConnection, model_version: str | None,
                   ) -> list[tuple[str, int | None, int | None, int]]:
    """(kind, true class, predicted class, records) of `model_version`'s failures, or every model's when None."""
    return con.execute(
        """
        SELECT kind, true_class, predicted_class, count(*)
        FROM failures WHERE ?::VARCHAR IS NULL OR model_version = ?
        GROUP BY ALL
        """,
        [model_version, model_version],
    ).fetchall()


def failed_captures(con: duckdb.DuckDBPyConnection, model_version: str | None) -> int:
    """Captures with at least one failure of `model_version` (of any model when None)."""
    return con.execute(
        "SELECT count(DISTINCT capture_id) FROM failures WHERE ?::VARCHAR IS NULL OR model_version = ?",
        [model_version, model_version],
    ).fetchone()[0]


def failure_ids(con: duckdb.DuckDBPyConnection, kinds: Sequence[str]) -> list[str]:
    """Ids of every failure record of one of `kinds`."""
    return [f for (f,) in con.execute("SELECT id FROM failures WHERE list_contains(?, kind)", [list(kinds)]).fetchall()]


_FAILURES_SQL = """
    SELECT f.id, f.kind, f.true_class, f.predicted_class, f.x1, f.y1, f.x2, f.y2, f.capture_id, f.label_id,
           c.sha256, c.camera, c.device, c.frame_width, c.frame_height, f.iou
    FROM failures f JOIN captures c ON c.id = f.capture_id
    WHERE $model_version::VARCHAR IS NULL OR f.model_version = $model_version
    ORDER BY f.id
"""


class FailureInFrame(NamedTuple):
    id: str
    kind: str
    true_class: int | None
    predicted_class: int | None
    x1: float
    y1: float
    x2: float
    y2: float
    capture_id: str
    label_id: str
    sha256: str
    camera: str
    device: str
    frame_width: int | None
    frame_height: int | None
    iou: float | None  # spurious: overlap with a verified object of its class already found


def failure_rows(con: duckdb.DuckDBPyConnection, model_version: str | None) -> list[FailureInFrame]:
    """The failures of `model_version` (None: every model's) with their capture's frame, by failure id."""
    return [FailureInFrame(*r) for r in con.sql(_FAILURES_SQL, params={"model_version": model_version}).fetchall()]


def failures_verified_boxes(con: duckdb.DuckDBPyConnection, model_version: str | None) -> dict[str, np.ndarray]:
    """(N, 4) xyxy verified boxes of each label a failure of `model_version` (None: any) was found against."""
    rows = con.sql(
        "SELECT label_id, list([x1, y1, x2, y2] ORDER BY idx) FROM label_boxes WHERE label_id IN "
        "(SELECT label_id FROM failures WHERE $model_version::VARCHAR IS NULL OR model_version = $model_version) "
        "GROUP BY label_id", params={"model_version": model_version}).fetchall()
    return {label_id: np.asarray(boxes, np.float64).reshape(-1, 4) for label_id, boxes in rows}


def failure_crops(con: duckdb.DuckDBPyConnection, failure_ids: Sequence[str]) -> dict[str, tuple]:
    """(image sha256, x1, y1, x2, y2) of each failure still recorded, by failure id."""
    rows = con.execute(
        "SELECT f.id, c.sha256, f.x1, f.y1, f.x2, f.y2 FROM failures f JOIN captures c ON c.id = f.capture_id "
        "WHERE list_contains(?, f.id)", [list(failure_ids)]).fetchall()
    return {r[0]: r[1:] for r in rows}


def failure_model_versions(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Model versions that have failure records, sorted."""
    return [v for (v,) in con.execute("SELECT DISTINCT model_version FROM failures WHERE model_version IS NOT "
                                      "NULL ORDER BY 1").fetchall()]


def unclustered_failures(con: duckdb.DuckDBPyConnection) -> int:
    """Failures in no active cluster: the mine stage has work only when there are some."""
    return con.execute(
        "SELECT count(*) FROM failures f WHERE NOT EXISTS (SELECT 1 FROM failure_cluster_members m "
        "JOIN failure_clusters c ON c.id = m.cluster_id WHERE m.failure_id = f.id AND c.retired_at IS NULL)"
    ).fetchall()[0][0]


def most_confused_class(con: duckdb.DuckDBPyConnection, target: int) -> int | None:
    """The class the model most often confused with `target` in verified reviews (either way round), or None."""
    row = con.execute(
        "SELECT CASE WHEN true_class = $t THEN predicted_class ELSE true_class END AS other, count(*) AS n "
        "FROM failures WHERE kind = 'confusion' AND (true_class = $t OR predicted_class = $t) "
        "AND true_class <> predicted_class GROUP BY other ORDER BY n DESC, other LIMIT 1",
        {"t": target},
    ).fetchone()
    return None if row is None else int(row[0])


def verified_box_classes(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The class of every verified box, by its vector ref (`label_id/idx`): mining's class centroids."""
    return dict(con.execute("SELECT label_id || '/' || CAST(idx AS VARCHAR), class_id FROM label_boxes").fetchall())


@dataclass(frozen=True)
class FailureBox:
    """Where a failure sits: its capture's frame (by sha256) and the box in pixels."""

    sha256: str
    box: tuple[float, float, float, float]
    kind: str


def failure_boxes(con: duckdb.DuckDBPyConnection, failure_ids: Sequence[str]) -> dict[str, FailureBox]:
    """The failures `failure_ids` that exist, by id."""
    rows = con.execute(
        "SELECT f.id, c.sha256, f.x1, f.y1, f.x2, f.y2, f.kind FROM failures f JOIN captures c ON c.id = f.capture_id "
        "WHERE list_contains(?, f.id)", [list(failure_ids)]).fetchall()
    return {fid: FailureBox(sha, (x1, y1, x2, y2), kind) for fid, sha, x1, y1, x2, y2, kind in rows}


def failure_kinds(con: duckdb.DuckDBPyConnection, captures: Sequence[str]) -> dict[str, dict[str, int]]:
    """How many failures of each kind the review found on each of `captures` (those with none are absent)."""
    found: dict[str, dict[str, int]] = {}
    for capture, kind, n in con.execute(
            "SELECT capture_id, kind, count(*) FROM failures WHERE list_contains(?, capture_id) GROUP BY ALL",
            [list(captures)]).fetchall():
        found.setdefault(capture, {})[kind] = n
    return found
