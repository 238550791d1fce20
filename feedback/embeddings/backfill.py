"""Embedding what the catalog lacks: vectors for captures, verified boxes and failure crops that have none yet.

Each job asks store/vectors.py what is missing for one embedder, embeds it in batches and stores the vectors.
"""

from __future__ import annotations

import numpy as np
from rich.progress import Progress

from feedback.embeddings.images import read_image
from feedback.embeddings.port import Embedder
from store.settings import Workspace
from store.vectors import (
    CAPTURE, CROP, LABEL_BOX, box_ref, captures_without_vectors, failure_crops_without_vectors, store_vectors,
    verified_boxes_without_vectors,
)


def embed_captures(ws: Workspace, embedder: Embedder, *, batch_size: int = 32, progress: bool = True) -> int:
    """Embed every capture that has no vector from this embedder yet; returns how many vectors were added.

    The catalog is opened briefly per batch, never across inference, so ingest and review
    flows can write in between. Captures sharing an image (same sha256) are embedded once.
    Unreadable images are logged and skipped (they are retried on the next run).
    """
    with ws.catalog.connect() as con:
        todo = captures_without_vectors(con, embedder.name)
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


def embed_verified_boxes(ws: Workspace, embedder: Embedder, *, progress: bool = True) -> int:
    """Embed every box of the latest verified label of each real training image (holdout stays out of
    selection); returns how many vectors were added."""
    with ws.catalog.connect() as con:
        todo = verified_boxes_without_vectors(con, embedder.name)
    return _embed_owned_boxes(ws, embedder, LABEL_BOX, [(label_id, sha, [box_ref(label_id, i) for i in idx], boxes)
                                                         for label_id, sha, idx, boxes in todo], progress)


def embed_failures(ws: Workspace, embedder: Embedder, *, progress: bool = True) -> int:
    """Embed the crop of every failure record not yet embedded by `embedder`."""
    with ws.catalog.connect() as con:
        todo = failure_crops_without_vectors(con, embedder.name)
    return _embed_owned_boxes(ws, embedder, CROP, todo, progress)


def _embed_owned_boxes(ws: Workspace, embedder: Embedder, kind: str,
                       todo: list[tuple[str, str, list[str], list[list[float]]]], progress: bool) -> int:
    added, pending = 0, []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"embedding {kind.replace('_', ' ')}s with {embedder.name}", total=len(todo))
        for _owner, sha, refs, boxes in todo:
            image = read_image(ws, sha)
            if image is not None:
                pending.extend(zip(refs, embedder.embed_boxes(image, np.asarray(boxes, np.float64)), strict=True))
            if len(pending) >= 512:
                added += store_vectors(ws.catalog, kind, embedder.name, pending)
                pending = []
            bar.advance(task)
    return added + store_vectors(ws.catalog, kind, embedder.name, pending)
