"""Verified labels in the catalog: the class list, images, sticky splits and label verdicts.

Every function takes an open connection, so callers group several into one transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np

from edge.protocol import utc_now

Split = Literal["train", "holdout"]
Origin = Literal["real", "synthetic"]


class ClassMismatch(ValueError):
    """A data set labelled in other classes than the catalog's."""


@dataclass(frozen=True)
class Label:
    """The current truth for one image: boxes in pixels and where the verdict came from."""

    id: str
    image_sha256: str
    label_hash: str
    boxes: np.ndarray  # (N, 4) float64 xyxy pixels
    class_ids: np.ndarray  # (N,) int64
    split: Split
    origin: Origin
    source: str


def catalog_classes(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [name for (name,) in con.execute("SELECT name FROM classes ORDER BY id").fetchall()]


def ensure_classes(con: duckdb.DuckDBPyConnection, names: Sequence[str]) -> None:
    """Adopt `names` if the catalog has no classes yet; otherwise they must be identical."""
    current = catalog_classes(con)
    if not current:
        con.executemany("INSERT INTO classes VALUES (?, ?)", list(enumerate(names)))
    elif list(names) != current:
        raise ClassMismatch(f"classes {list(names)} do not match the catalog's {current} (same names, same order)")


def label_hash(image_sha256: str, boxes: np.ndarray, class_ids: np.ndarray) -> str:
    """Content hash of a label set; boxes rounded to 1/100 px so float noise is not a change."""
    rows = sorted(f"{int(c)} {' '.join(f'{v:.2f}' for v in b)}" for b, c in zip(boxes, class_ids, strict=True))
    return hashlib.sha256("\n".join([image_sha256, *rows]).encode()).hexdigest()


def add_image(
    con: duckdb.DuckDBPyConnection, sha256: str, width: int, height: int, media_type: str,
    origin: Origin, source: str, lineage: dict | None = None,
) -> None:
    con.execute(
        "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [sha256, width, height, media_type, origin, source, json.dumps(lineage) if lineage else None, utc_now()],
    )


def count_images(con: duckdb.DuckDBPyConnection, origin: str) -> int:
    """Images of one origin in the catalog ('real' or 'synthetic')."""
    return con.execute("SELECT count(*) FROM images WHERE origin = ?", [origin]).fetchall()[0][0]


def assign_split(con: duckdb.DuckDBPyConnection, sha256: str, wanted: Split) -> Split:
    """Record the image's split; holdout is sticky, so the answer may differ from `wanted`."""
    row = con.execute("SELECT split FROM splits WHERE image_sha256 = ?", [sha256]).fetchone()
    if row and row[0] == "holdout":
        return "holdout"
    if row is None:
        con.execute("INSERT INTO splits VALUES (?, ?, ?)", [sha256, wanted, utc_now()])
    elif wanted == "holdout":
        con.execute("UPDATE splits SET split = 'holdout', assigned_at = ? WHERE image_sha256 = ?", [utc_now(), sha256])
    return wanted


def add_label(
    con: duckdb.DuckDBPyConnection,
    image_sha256: str,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    *,
    source: str,
    status: str = "verified",
    annotator: str | None = None,
    provenance: dict | None = None,
) -> str:
    """Store one verdict; returns its id. The image row must exist."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    label_id = uuid.uuid4().hex
    con.execute(
        "INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [label_id, image_sha256, label_hash(image_sha256, boxes, class_ids), status, source, annotator, utc_now(),
         json.dumps(provenance) if provenance else None],
    )
    if len(boxes):
        con.executemany(
            "INSERT INTO label_boxes VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[label_id, i, int(c), *map(float, b)] for i, (b, c) in enumerate(zip(boxes, class_ids, strict=True))],
        )
    return label_id


def current_labels(con: duckdb.DuckDBPyConnection) -> list[Label]:
    """The latest verified label of every image that has one, with its split and origin."""
    rows = con.execute(
        """
        WITH latest AS (
            SELECT * FROM labels WHERE status = 'verified'
            QUALIFY row_number() OVER (PARTITION BY image_sha256 ORDER BY created_at DESC, id) = 1
        )
        SELECT l.id, l.image_sha256, l.label_hash, COALESCE(s.split, 'train'), i.origin, l.source,
               list(b.class_id ORDER BY b.idx) FILTER (WHERE b.idx IS NOT NULL),
               list([b.x1, b.y1, b.x2, b.y2] ORDER BY b.idx) FILTER (WHERE b.idx IS NOT NULL)
        FROM latest l
        JOIN images i ON i.sha256 = l.image_sha256
        LEFT JOIN splits s ON s.image_sha256 = l.image_sha256
        LEFT JOIN label_boxes b ON b.label_id = l.id
        GROUP BY ALL
        ORDER BY l.image_sha256
        """
    ).fetchall()
    return [
        Label(
            id=r[0], image_sha256=r[1], label_hash=r[2], split=r[3], origin=r[4], source=r[5],
            class_ids=np.asarray(r[6] or [], dtype=np.int64),
            boxes=np.asarray(r[7] or [], dtype=np.float64).reshape(-1, 4),
        )
        for r in rows
    ]


def holdout_by_hash(sha256: str, share: float) -> bool:
    """A stable, unbiased split rule: the same image always lands on the same side."""
    return int(sha256[:8], 16) / 0xFFFFFFFF < share
