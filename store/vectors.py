"""Vectors in the catalog (the embeddings table): stored once per (kind, ref, embedder name), read back as one matrix.

Kinds: `capture` (ref: capture id), `box` (a candidate box, ref: capture id/idx), `label_box` (a verified
box, ref: label id/idx) and `crop` (a failure's crop, ref: failure id).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from edge.protocol import utc_now
from store.catalog import Catalog

CAPTURE = "capture"  # a whole frame (ref: capture id)
BOX = "box"  # a candidate box (ref: capture id/idx)
LABEL_BOX = "label_box"  # a verified box (ref: label id/idx)
CROP = "crop"  # a failure's crop (ref: failure id)


def box_ref(owner: str, idx: int) -> str:
    """The ref of box `idx` of a capture or label."""
    return f"{owner}/{idx}"


def store_vectors(catalog: Catalog, kind: str, model: str, rows: Sequence[tuple[str, np.ndarray]]) -> int:
    """Insert (ref, vector) rows; vectors already stored for a ref stand. Returns how many were added."""
    if not rows:
        return 0
    flat = np.concatenate([np.asarray(vec, np.float32).reshape(-1) for _, vec in rows])
    dim = flat.size // len(rows)
    # One Arrow list column built from the flat buffer: no per-float Python objects.
    vectors = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, dim, dtype=np.int32)), pa.array(flat))
    table = pa.table({
        "kind": pa.array([kind] * len(rows)),
        "ref": pa.array([ref for ref, _ in rows]),
        "model": pa.array([model] * len(rows)),
        "vector": vectors,
        "created_at": pa.array([utc_now()] * len(rows), pa.timestamp("us", tz="UTC")),
    })
    with catalog.connect() as con:
        con.register("batch", table)
        # A concurrent run may have stored some of these already; theirs stand.
        added = con.execute("INSERT INTO embeddings BY NAME SELECT * FROM batch ON CONFLICT DO NOTHING").fetchone()[0]
        con.unregister("batch")
    return int(added)


def read_vectors(con: duckdb.DuckDBPyConnection, kind: str, model: str,
                 refs: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(refs, (N, dim) float32) of the stored vectors of `kind` by `model`, all or only `refs` (in ref order)."""
    sql = "SELECT ref, vector FROM embeddings WHERE kind = $kind AND model = $model"
    params: dict[str, object] = {"kind": kind, "model": model}
    if refs is not None:
        con.register("wanted", pa.table({"ref": pa.array(list(refs), pa.string())}))
        sql += " AND ref IN (SELECT ref FROM wanted)"
    table = con.sql(sql + " ORDER BY ref", params=params).to_arrow_table()
    if refs is not None:
        con.unregister("wanted")
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    flat = table.column("vector").combine_chunks().flatten().to_numpy().astype(np.float32, copy=False)
    return table.column("ref").to_pylist(), flat.reshape(table.num_rows, -1)


def captures_without_vectors(con: duckdb.DuckDBPyConnection, model: str) -> list[tuple[str, str]]:
    """(capture id, image sha256) of every capture with no frame vector from `model`, by image."""
    return con.execute(
        "SELECT id, sha256 FROM captures c WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
        "WHERE e.kind = ? AND e.ref = c.id AND e.model = ?) ORDER BY sha256, id", [CAPTURE, model]).fetchall()


def verified_boxes_without_vectors(con: duckdb.DuckDBPyConnection, model: str,
                                   ) -> list[tuple[str, str, list[int], list[list[float]]]]:
    """(label id, image sha256, box indices, xyxy boxes) of the boxes with no `model` vector in the latest verified
    label of each real training image (holdout stays out of selection)."""
    return con.execute(
        """
        WITH latest AS (
            SELECT l.id, l.image_sha256 FROM labels l JOIN images i ON i.sha256 = l.image_sha256
            LEFT JOIN splits s ON s.image_sha256 = l.image_sha256
            WHERE l.status = 'verified' AND i.origin = 'real' AND coalesce(s.split, 'train') = 'train'
            QUALIFY row_number() OVER (PARTITION BY l.image_sha256 ORDER BY l.created_at DESC, l.id) = 1
        )
        SELECT l.id, l.image_sha256, list(b.idx ORDER BY b.idx), list([b.x1, b.y1, b.x2, b.y2] ORDER BY b.idx)
        FROM latest l JOIN label_boxes b ON b.label_id = l.id
        WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.kind = ? AND e.model = ?
                          AND e.ref = l.id || '/' || CAST(b.idx AS VARCHAR))
        GROUP BY l.id, l.image_sha256 ORDER BY l.id
        """, [LABEL_BOX, model]).fetchall()


def failure_crops_without_vectors(con: duckdb.DuckDBPyConnection, model: str,
                                  ) -> list[tuple[str, str, list[str], list[list[float]]]]:
    """(capture id, image sha256, failure ids, xyxy crop boxes) of the failures with no `model` crop vector."""
    return con.execute(
        "SELECT f.capture_id, c.sha256, list(f.id ORDER BY f.id), list([f.x1, f.y1, f.x2, f.y2] ORDER BY f.id) "
        "FROM failures f JOIN captures c ON c.id = f.capture_id WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
        "WHERE e.kind = ? AND e.model = ? AND e.ref = f.id) GROUP BY f.capture_id, c.sha256 ORDER BY 1",
        [CROP, model]).fetchall()


def label_box_classes(con: duckdb.DuckDBPyConnection, refs: Sequence[str]) -> list[int]:
    """The class of each verified box behind the `label_box` refs `refs`, in their order."""
    classes = {box_ref(label_id, idx): k for label_id, idx, k in con.execute(
        "SELECT label_id, idx, class_id FROM label_boxes WHERE list_contains(?, label_id)",
        [sorted({r.rsplit("/", 1)[0] for r in refs})]).fetchall()}
    return [classes[r] for r in refs]
