"""Box-level views for review: every box the deployed model sees in a candidate, and every verified box, embedded.

The probe learns from verified boxes and scores candidate boxes; failure crops seed retrieval.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from rich.progress import Progress

from edge.protocol import utc_now
from feedback.embeddings.catalog import CAPTURE, box_ref, read_image, store_vectors
from feedback.embeddings.port import Embedder
from store.review_tasks import unscanned_candidates
from store.settings import Workspace

BOX = "box"  # embeddings kind of a candidate box (ref: capture id/idx)
LABEL_BOX = "label_box"  # of a verified box (ref: label id/idx)
CROP = "crop"  # of a failure's crop (ref: failure id)
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
                con.begin()
                if rows:
                    con.executemany("INSERT INTO box_candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                                    "ON CONFLICT DO NOTHING", rows)
                if scans:
                    con.executemany("INSERT INTO box_scans VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", scans)
                con.commit()
            done += len(scans)
            bar.advance(task, len(todo[start : start + batch]))
    return done


def _unmatched(reported: np.ndarray, found: np.ndarray, iou: float = 0.7) -> np.ndarray:
    """Which reported boxes overlap no found box by `iou` or more."""
    from feedback.review.failures import box_iou

    if not len(found) or not len(reported):
        return np.ones(len(reported), bool)
    return box_iou(np.asarray(reported, np.float64), np.asarray(found, np.float64)).max(axis=1) < iou


def _reported(ws: Workspace, capture_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with ws.catalog.connect() as con:
        rows = con.execute("SELECT x1, y1, x2, y2, class_id, confidence FROM detections WHERE capture_id = ? "
                           "ORDER BY idx", [capture_id]).fetchall()
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return a[:, :4], a[:, 4].astype(np.int64), a[:, 5]


def embed_verified_boxes(ws: Workspace, embedder: Embedder, *, progress: bool = True) -> int:
    """Embed every box of the latest verified label of each real training image (holdout stays out of
    selection); returns how many vectors were added."""
    with ws.catalog.connect() as con:
        todo = con.execute(
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
            """, [LABEL_BOX, embedder.name]).fetchall()
    return _embed_owned_boxes(ws, embedder, LABEL_BOX, [(label_id, sha, [box_ref(label_id, i) for i in idx], boxes)
                                                         for label_id, sha, idx, boxes in todo], progress)


def embed_failures(ws: Workspace, embedder: Embedder, *, progress: bool = True) -> int:
    """Embed the crop of every failure record not yet embedded by `embedder`."""
    with ws.catalog.connect() as con:
        todo = con.execute(
            "SELECT f.capture_id, c.sha256, list(f.id ORDER BY f.id), list([f.x1, f.y1, f.x2, f.y2] ORDER BY f.id) "
            "FROM failures f JOIN captures c ON c.id = f.capture_id WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
            "WHERE e.kind = ? AND e.model = ? AND e.ref = f.id) GROUP BY f.capture_id, c.sha256 ORDER BY 1",
            [CROP, embedder.name]).fetchall()
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


def candidate_box_table(ws: Workspace, model: str) -> pa.Table:
    """Every stored candidate box of `model` with its capture id, class, confidence and embedding ref."""
    with ws.catalog.connect() as con:
        return con.execute(
            "SELECT capture_id, idx, class_id, confidence, capture_id || '/' || CAST(idx AS VARCHAR) AS ref "
            "FROM box_candidates WHERE model = ? ORDER BY capture_id, idx", [model]).fetch_arrow_table()


def prepare_vectors(ws: Workspace, *, clip_model: str | None = None, clip_pretrained: str | None = None,
                    progress: bool = True) -> str:
    """Everything active selection reads, computed where missing; returns the embedder's name.

    The champion's own features unless CLIP weights are given: candidates' frames and boxes (scanned at a
    low confidence), verified boxes (the probe's teachers) and failure crops (retrieval seeds).
    """
    from feedback.embeddings.catalog import embed_captures
    from feedback.embeddings.choice import default_embedder

    embedder = default_embedder(ws, clip_model=clip_model, clip_pretrained=clip_pretrained)
    scan_candidates(ws, embedder, progress=progress)
    if not hasattr(embedder, "detect_and_embed"):
        embed_captures(ws, embedder, progress=progress)  # a detector's scan embeds the frames already
    embed_verified_boxes(ws, embedder, progress=progress)
    embed_failures(ws, embedder, progress=progress)
    return embedder.name
