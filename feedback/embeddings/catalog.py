"""Vectors in the catalog: stored once per (kind, ref, embedder name), read back as one matrix.

Kinds: `capture` (ref: capture id), `box` (a candidate box, ref: capture id/idx), `label_box` (a verified
box, ref: label id/idx) and `crop` (a failure's crop, ref: failure id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import duckdb
import numpy as np
import pyarrow as pa
from rich.progress import Progress

from edge.protocol import utc_now
from feedback.embeddings.port import Embedder
from store.catalog import Catalog
from store.settings import Workspace

log = logging.getLogger(__name__)

CAPTURE = "capture"


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


def read_image(ws: Workspace, sha: str) -> np.ndarray | None:
    """A stored image as BGR, or None (logged) when it is missing or does not decode."""
    try:
        data = ws.blobs.get(sha)
    except KeyError:
        log.warning("image %s is missing from the blob store", sha)
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        log.warning("image %s could not be decoded", sha)
    return image


def embed_captures(ws: Workspace, embedder: Embedder, *, batch_size: int = 32, progress: bool = True) -> int:
    """Embed every capture that has no vector from this embedder yet; returns how many vectors were added.

    The catalog is opened briefly per batch, never across inference, so ingest and review
    flows can write in between. Captures sharing an image (same sha256) are embedded once.
    Unreadable images are logged and skipped (they are retried on the next run).
    """
    with ws.catalog.connect() as con:
        todo = con.execute(
            "SELECT id, sha256 FROM captures c WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
            "WHERE e.kind = ? AND e.ref = c.id AND e.model = ?) ORDER BY sha256, id",
            [CAPTURE, embedder.name],
        ).fetchall()
    by_sha: dict[str, list[str]] = {}
    for capture_id, sha in todo:
        by_sha.setdefault(sha, []).append(capture_id)
    shas = list(by_sha)
    added = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"embedding captures with {embedder.name}", total=len(todo))
        for start in range(0, len(shas), batch_size):
            batch = shas[start : start + batch_size]
            images = {sha: img for sha in batch if (img := read_image(ws, sha)) is not None}
            vectors = embedder.embed(list(images.values()))
            rows = [(capture_id, vec) for sha, vec in zip(images, vectors) for capture_id in by_sha[sha]]
            added += store_vectors(ws.catalog, CAPTURE, embedder.name, rows)
            bar.advance(task, sum(len(by_sha[sha]) for sha in batch))
    return added
