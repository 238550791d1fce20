"""Benchmark: clustering and describing 10,000 failures, the path `edgeloop clusters` runs after embedding.

Prints one JSON line last. A workspace gets `--frames` generated scenes (real JPEGs in the blob store, verified
labels from their ground truth) and `--n` failure records spread over them, of every class and kind, whose crop
boxes are the scenes' objects plus random boxes. Their crop vectors are synthetic (unit vectors around a few
centres per group, stored under a made-up embedder name), because embedding 10,000 crops is the embedder's cost,
not mining's. "seconds" is `mine_clusters` on that name: reading failures and vectors, decoding every frame and
measuring every crop, clustering each (class, kind) group, describing and saving the clusters.
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/mining.py`, this folder would come first on sys.path, and bench/select.py would shadow
# the standard library's `select` (which subprocess imports): put the repo there instead.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE), *(p for p in sys.path if os.path.abspath(p or ".") != HERE)]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from feedback.mining.mine import mine_clusters  # noqa: E402
from feedback.mining.prompts import Phrasebook, write_prompts  # noqa: E402
from feedback.scenes import CLASSES, encode_jpeg, render_scene  # noqa: E402
from store.clusters import read_clusters  # noqa: E402
from store.labels import ensure_classes  # noqa: E402
from store.settings import Settings, Workspace  # noqa: E402
from store.vectors import CROP, store_vectors  # noqa: E402

EMBEDDER = "bench:synthetic-256"
KINDS = ("missed", "spurious", "confusion", "localization")


def fill(ws: Workspace, n: int, frames: int, dim: int, rng: np.random.Generator) -> None:
    now = datetime.now(timezone.utc)
    captures, labels, label_boxes, failures, vectors = [], [], [], [], []
    centres = rng.standard_normal((len(CLASSES) * len(KINDS) * 4, dim)).astype(np.float32)
    for f in range(frames):
        scene = render_scene(10_000 + f)
        sha = ws.blobs.put(encode_jpeg(scene.image))
        capture, label = f"cap{f:06d}", f"lab{f:06d}"
        captures.append({"id": capture, "sha256": sha, "device": "dock-1", "camera": f"cam-{f % 4}",
                         "captured_at": now, "received_at": now, "loaded_at": now, "frame_width": 320,
                         "frame_height": 240, "model_version": "m1"})
        labels.append({"id": label, "image_sha256": sha, "label_hash": sha, "status": "verified",
                       "source": "review", "created_at": now})
        label_boxes += [{"label_id": label, "idx": i, "class_id": int(c), "x1": float(b[0]), "y1": float(b[1]),
                         "x2": float(b[2]), "y2": float(b[3])} for i, (b, c) in enumerate(zip(scene.boxes,
                                                                                           scene.class_ids))]
        count = n // frames + (f < n % frames)
        xy = rng.uniform(0, (280, 200), (count, 2))
        boxes = np.hstack([xy, xy + rng.uniform(12, 40, (count, 2))])
        boxes[: len(scene.boxes)] = scene.boxes[:count]
        for box in boxes:
            kind = KINDS[int(rng.integers(len(KINDS)))]
            true_class, predicted = int(rng.integers(len(CLASSES))), int(rng.integers(len(CLASSES)))
            group = (true_class if kind != "spurious" else predicted) * len(KINDS) + KINDS.index(kind)
            fid = uuid.UUID(int=int(rng.integers(2**63))).hex
            failures.append({"id": fid, "capture_id": capture, "label_id": label, "model_version": "m1",
                             "kind": kind, "true_class": None if kind == "spurious" else true_class,
                             "predicted_class": None if kind == "missed" else predicted,
                             "x1": float(box[0]), "y1": float(box[1]), "x2": float(box[2]), "y2": float(box[3]),
                             "created_at": now})
            centre = centres[group * 4 + int(rng.integers(4))]
            vec = centre + 0.6 * rng.standard_normal(dim).astype(np.float32)
            vectors.append((fid, vec / np.linalg.norm(vec)))
    with ws.catalog.connect() as con:
        ensure_classes(con, list(CLASSES))
        for table, rows in (("captures", captures), ("labels", labels), ("label_boxes", label_boxes),
                            ("failures", failures)):
            con.register("batch", pa.Table.from_pylist(rows))
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch")
            con.unregister("batch")
    store_vectors(ws.catalog, CROP, EMBEDDER, vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="failure records")
    parser.add_argument("--frames", type=int, default=1_000, help="generated scenes they are spread over")
    parser.add_argument("--dim", type=int, default=256, help="crop vector size (the detector embedder's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Settings(workspace=Path(tmp), fsync=False))
        started = time.perf_counter()
        fill(ws, args.n, args.frames, args.dim, np.random.default_rng(args.seed))
        fill_seconds = time.perf_counter() - started

        started = time.perf_counter()
        clusters = mine_clusters(ws, EMBEDDER, seed=args.seed, progress=False)
        seconds = time.perf_counter() - started
        assert sum(c.size for c in clusters) == args.n  # every failure in a cluster or in noise

        started = time.perf_counter()
        again = mine_clusters(ws, EMBEDDER, seed=args.seed, progress=False)
        rerun_seconds = time.perf_counter() - started
        kept = len({c.id for c in again} & {c.id for c in clusters})

        book = Phrasebook.from_settings(ws.settings)
        started = time.perf_counter()
        with ws.catalog.connect() as con:
            prompts = [p for c in read_clusters(con) if not c.noise for p in write_prompts(c, book, variants=4)]
        prompt_seconds = time.perf_counter() - started

    print(json.dumps({
        "failures": args.n, "frames": args.frames, "dim": args.dim, "cpus": os.cpu_count(),
        "groups": len({(c.class_id, c.kind) for c in clusters}), "clusters": sum(not c.noise for c in clusters),
        "noise": sum(c.size for c in clusters if c.noise), "seconds": round(seconds, 2),
        "rerun_seconds": round(rerun_seconds, 2), "ids_kept_on_rerun": kept, "prompts": len(prompts),
        "prompt_seconds": round(prompt_seconds, 2), "fill_seconds": round(fill_seconds, 2),
    }))


if __name__ == "__main__":
    main()
