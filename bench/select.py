"""Benchmark: choosing a review budget from a million captures with stored CLIP vectors.

Prints one JSON line last. "seconds" is `select_indices` on vectors already in memory (random unit vectors,
random priorities); the catalog figures say what reading them costs, and "end_to_end_seconds" is
`select_captures` on a catalog of n captures (its SQL, the pool's vectors, the greedy step).
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/select.py`, this folder comes first on sys.path and this file would shadow the
# standard library's `select` module (which socket, subprocess and pyarrow import): put the repo there instead.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE), *(p for p in sys.path if os.path.abspath(p or ".") != HERE)]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from feedback.embeddings.clip import settings_embedder_name  # noqa: E402
from feedback.review.selection import (  # noqa: E402
    POOL_PER_PICK, _pool_vectors, pool_indices, select_captures, select_indices,
)
from store.settings import Settings, Workspace  # noqa: E402
from store.vectors import CAPTURE as KIND  # noqa: E402

CHUNK = 100_000


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, CHUNK):  # in chunks: no float64 copy of the whole matrix
        block = rng.standard_normal((min(CHUNK, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def fill_catalog(ws: Workspace, vectors: np.ndarray, priority_conf: np.ndarray) -> float:
    """n captures, one detection and one trigger each, and their vectors; returns the seconds writing vectors took."""
    n, dim = vectors.shape
    ids = [f"cap{i:07d}" for i in range(n)]
    now = datetime.now(timezone.utc)
    model = settings_embedder_name(ws.settings)
    vector_seconds = 0.0
    with ws.catalog.connect() as con:
        for start in range(0, n, CHUNK):
            part = slice(start, min(start + CHUNK, n))
            rows = len(ids[part])
            shas = [f"{i:064x}" for i in range(start, start + rows)]
            tables = {
                "captures": pa.table({
                    "id": ids[part], "sha256": shas, "device": ["d"] * rows, "camera": ["c"] * rows,
                    "captured_at": [now] * rows, "received_at": [now] * rows, "loaded_at": [now] * rows,
                }),
                "detections": pa.table({
                    "capture_id": ids[part], "idx": [0] * rows, "class_id": [0] * rows,
                    "confidence": priority_conf[part].astype(np.float64),
                    "x1": [0.0] * rows, "y1": [0.0] * rows, "x2": [9.0] * rows, "y2": [9.0] * rows,
                }),
                "triggers": pa.table({"capture_id": ids[part], "reason": ["uncertainty"] * rows}),
            }
            for table, data in tables.items():
                con.register("batch", data)
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch")
                con.unregister("batch")
            flat = vectors[part].reshape(-1)
            started = time.perf_counter()
            lists = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, dim, dtype=np.int32)), pa.array(flat))
            con.register("batch", pa.table({"kind": [KIND] * rows, "ref": ids[part], "model": [model] * rows,
                                             "vector": lists, "created_at": [now] * rows}))
            con.execute("INSERT INTO embeddings BY NAME SELECT * FROM batch")
            con.unregister("batch")
            vector_seconds += time.perf_counter() - started
    return vector_seconds


def load_all(ws: Workspace, dim: int) -> tuple[float, int]:
    started = time.perf_counter()
    with ws.catalog.connect() as con:
        table = con.sql("SELECT ref, vector FROM embeddings WHERE kind = $kind AND model = $model",
                        params={"kind": KIND, "model": settings_embedder_name(ws.settings)}).to_arrow_table()
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return time.perf_counter() - started, len(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-catalog", action="store_true", help="only the in-memory selection")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    vectors = unit_vectors(args.n, args.dim, rng)
    priority = rng.random(args.n, dtype=np.float32)
    flagged = np.zeros(args.n, bool)

    started = time.perf_counter()
    picks = select_indices(vectors, priority, flagged, args.budget)
    seconds = time.perf_counter() - started
    assert len(np.unique(picks)) == args.budget
    result: dict[str, object] = {"n": args.n, "dim": args.dim, "budget": args.budget, "seconds": round(seconds, 3),
                                 "pool": min(args.n, POOL_PER_PICK * args.budget),
                                 "seconds_includes_catalog_read": False}

    if not args.no_catalog:
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace(Settings(workspace=Path(tmp), fsync=False))
            # Confidences in [0.5, 1): the capture's uncertainty then orders like `priority`.
            result["catalog_write_seconds"] = round(fill_catalog(ws, vectors, 1 - priority / 2), 3)
            del vectors
            load_seconds, loaded = load_all(ws, args.dim)
            assert loaded == args.n
            result["catalog_load_all_seconds"] = round(load_seconds, 3)
            # The pool select_captures reads: uncertainty = 1 - |2·confidence - 1| = priority here.
            pool_ids = np.asarray([f"cap{i:07d}" for i in pool_indices(priority, flagged, args.budget)], object)
            started = time.perf_counter()
            _pool_vectors(ws, pool_ids, settings_embedder_name(ws.settings))
            result["catalog_load_pool_seconds"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            chosen = select_captures(ws, args.budget)
            result["end_to_end_seconds"] = round(time.perf_counter() - started, 3)
            assert len(chosen) == args.budget
    print(json.dumps(result))


if __name__ == "__main__":
    main()
