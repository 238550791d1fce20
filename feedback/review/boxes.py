"""Box-level views for review: every box the deployed model sees in a candidate, scanned and embedded, and the
vectors active selection reads. The probe learns from verified boxes and scores candidate boxes.
"""

from __future__ import annotations

import numpy as np
from rich.progress import Progress

from edge.protocol import utc_now
from feedback.embeddings.backfill import embed_captures, embed_failures, embed_verified_boxes
from feedback.embeddings.choice import default_embedder
from feedback.embeddings.images import read_image
from feedback.embeddings.port import Embedder
from feedback.review.failures import box_iou
from store.review_history import shown_detections
from store.review_tasks import add_box_scans, unscanned_candidates
from store.settings import Workspace
from store.vectors import BOX, CAPTURE, box_ref, store_vectors

SCAN_CONF = 0.05  # low enough that a rare class the model barely scores still leaves a box to look at


def scan_candidates(ws: Workspace, embedder: Embedder, *, conf: float = SCAN_CONF, batch: int = 16,
                    progress: bool = True) -> int:
    """Detect (at `conf`) and embed every box of each candidate capture not yet scanned by `embedder`, and the
    frame itself. An embedder that cannot detect (CLIP) embeds the boxes the device reported instead.
    Returns how many captures were scanned; the catalog is written per batch, so a crash loses one batch.
    """
    with ws.catalog.connect() as con:
        todo = unscanned_candidates(con, embedder.name)
    detects = hasattr(embedder, "detect_and_embed")
    done = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"scanning candidates with {embedder.name}", total=len(todo))
        for start in range(0, len(todo), batch):
            rows, box_vectors, frame_vectors, scans = [], [], [], []
            for capture_id, sha in todo[start : start + batch]:
                image = read_image(ws, sha)
                if image is None:
                    continue  # retried on the next scan
                boxes, classes, scores = _reported(ws, capture_id)
                if detects:
                    found, frame_vec, vecs = embedder.detect_and_embed(image, conf=conf)  # type: ignore[attr-defined]
                    frame_vectors.append((capture_id, frame_vec))
                    # The device may run another model than the champion: its boxes are scored too, unless
                    # the champion found the same object.
                    extra = _unmatched(boxes, found.xyxy)
                    boxes = np.concatenate([found.xyxy, boxes[extra]])
                    classes = np.concatenate([found.class_id, classes[extra]])
                    scores = np.concatenate([found.confidence, scores[extra]])
                    vecs = np.concatenate([vecs, embedder.embed_boxes(image, boxes[len(found):])])
                else:
                    vecs = embedder.embed_boxes(image, boxes)
                for i, (b, c, s, v) in enumerate(zip(boxes, classes, scores, vecs, strict=True)):
                    rows.append((capture_id, embedder.name, i, int(c), float(s), *map(float, b)))
                    box_vectors.append((box_ref(capture_id, i), v))
                scans.append((capture_id, embedder.name, len(boxes), utc_now()))
            # Vectors first, then the boxes and the scan mark in one transaction: a scan is marked only
            # once everything it produced is stored, and stored vectors are never written twice.
            store_vectors(ws.catalog, BOX, embedder.name, box_vectors)
            store_vectors(ws.catalog, CAPTURE, embedder.name, frame_vectors)
            with ws.catalog.connect() as con:
                add_box_scans(con, rows, scans)
            done += len(scans)
            bar.advance(task, len(todo[start : start + batch]))
    return done


def _unmatched(reported: np.ndarray, found: np.ndarray, iou: float = 0.7) -> np.ndarray:
    """Which reported boxes overlap no found box by `iou` or more."""
    if not len(found) or not len(reported):
        return np.ones(len(reported), bool)
    return box_iou(np.asarray(reported, np.float64), np.asarray(found, np.float64)).max(axis=1) < iou


def _reported(ws: Workspace, capture_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy boxes, classes, confidences) the capture's device uploaded."""
    with ws.catalog.connect() as con:
        shown = shown_detections(con, capture_id)
    return shown[:, 2:], shown[:, 0].astype(np.int64), shown[:, 1]


def prepare_vectors(ws: Workspace, *, clip_model: str | None = None, clip_pretrained: str | None = None,
                    progress: bool = True) -> str:
    """Everything active selection reads, computed where missing; returns the embedder's name.

    The champion's own features unless CLIP weights are given: candidates' frames and boxes (scanned at a
    low confidence), verified boxes (the probe's teachers) and failure crops (retrieval seeds).
    """
    embedder = default_embedder(ws, clip_model=clip_model, clip_pretrained=clip_pretrained)
    scan_candidates(ws, embedder, progress=progress)
    if not hasattr(embedder, "detect_and_embed"):
        embed_captures(ws, embedder, progress=progress)  # a detector's scan embeds the frames already
    embed_verified_boxes(ws, embedder, progress=progress)
    embed_failures(ws, embedder, progress=progress)
    return embedder.name
