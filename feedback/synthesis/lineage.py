"""Storing a synthesis run: kept images as training-only catalog rows with their lineage, rejected ones with reasons.

Kept images go to the blob store, `images.origin = 'synthetic'`, split train, a label with source `synthetic`;
a synthetic image is never put in the holdout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.protocol import utc_now
from feedback.synthesis.port import SynthesisRequest
from store.labels import add_image, add_label, assign_split
from store.settings import Workspace

JPEG_QUALITY = 95  # real frames are JPEGs too; at 95 the re-encoding is far below what the model sees
THUMB_SIDE = 256


class SynthesisStoreError(RuntimeError):
    """A synthetic image would break the catalog's rules (it would land in the holdout)."""


@dataclass
class Kept:
    idx: int
    image: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    lineage: dict[str, Any]
    vectors: np.ndarray | None = None  # the new boxes' embeddings, stored for later runs' duplicate checks
    sha256: str | None = None


@dataclass
class Dropped:
    idx: int
    reason: str
    detail: str | None
    lineage: dict[str, Any]
    image: np.ndarray | None = None  # None: the generator made no pixels (a safety filter, a cost cap)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as JPEG")
    return data.tobytes()


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    scale = side / max(image.shape[:2])
    return image if scale >= 1 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def start_run(ws: Workspace, run_id: str, generator: str, request: SynthesisRequest, embedder: str | None) -> None:
    record = {k: v for k, v in vars(request).items() if v not in (None, (), {})}
    with ws.catalog.connect() as con:
        con.execute(
            "INSERT INTO synthesis_runs (id, generator, cluster_id, target_class, request, embedder, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, generator, request.cluster_id, request.target_class, json.dumps(record, default=str), embedder,
             utc_now()],
        )


def save_batch(ws: Workspace, run_id: str, kept: list[Kept], dropped: list[Dropped]) -> None:
    """Blobs first (content-addressed, harmless if the catalog write fails), then one transaction."""
    for item in kept:
        item.sha256 = ws.blobs.put(encode_jpeg(item.image))
    thumbs = {d.idx: ws.blobs.put(encode_jpeg(thumbnail(d.image), 85)) for d in dropped if d.image is not None}
    now = utc_now()
    with ws.catalog.connect() as con:
        con.begin()
        try:
            for item in kept:
                h, w = item.image.shape[:2]
                add_image(con, item.sha256, w, h, "image/jpeg", "synthetic", f"synthetic:{item.lineage['generator']}",
                          item.lineage)
                if assign_split(con, item.sha256, "train") != "train":
                    raise SynthesisStoreError(f"synthetic image {item.sha256} is recorded in the holdout; "
                                              "synthetic images are for training only")
                add_label(con, item.sha256, item.boxes, item.class_ids, source="synthetic",
                          provenance={"run_id": run_id, "generator": item.lineage["generator"], "index": item.idx})
            outcomes = ([[run_id, k.idx, True, k.sha256, None, None, None, None, now] for k in kept]
                        + [[run_id, d.idx, False, None, d.reason, d.detail, thumbs.get(d.idx),
                            json.dumps(d.lineage, default=str), now] for d in dropped])
            if outcomes:  # a batch a generator made nothing of: DuckDB refuses an empty executemany
                con.executemany("INSERT INTO synthesis_outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", outcomes)
            con.commit()
        except BaseException:
            con.rollback()
            raise


def finish_run(ws: Workspace, run_id: str, *, kept: int, rejected: int, cost_usd: float,
               domain_gap: dict[str, Any] | None) -> None:
    with ws.catalog.connect() as con:
        con.execute(
            "UPDATE synthesis_runs SET finished_at = ?, n_kept = ?, n_rejected = ?, cost_usd = ?, domain_gap = ? "
            "WHERE id = ?",
            [utc_now(), kept, rejected, cost_usd, json.dumps(domain_gap) if domain_gap else None, run_id],
        )


def stored_hashes(ws: Workspace) -> tuple[list[str], list[int]]:
    """(refs, perceptual hashes) of the new objects of every synthetic image already kept."""
    with ws.catalog.connect() as con:
        rows = con.execute(
            "SELECT sha256, lineage->>'$.filters.phash' FROM images WHERE origin = 'synthetic' ORDER BY sha256"
        ).fetchall()
    refs, hashes = [], []
    for sha, found in rows:
        for i, h in enumerate(json.loads(found) if found else []):
            refs.append(f"synthetic:{sha}/{i}")
            hashes.append(int(h, 16))
    return refs, hashes
