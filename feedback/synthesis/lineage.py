"""Storing a synthesis run: kept images as training-only catalog rows with their lineage, rejected ones with reasons.

Kept images go to the blob store, `images.origin = 'synthetic'`, split train, a label with source `synthetic`;
a synthetic image is never put in the holdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from feedback.synthesis.port import SynthesisRequest
from store import synthesis as store_synthesis
from store.labels import add_image, add_label, assign_split
from store.settings import Workspace
from store.synthesis import Outcome

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
        store_synthesis.start_run(con, run_id, generator, request.cluster_id, request.target_class, record, embedder)


def save_batch(ws: Workspace, run_id: str, kept: list[Kept], dropped: list[Dropped]) -> None:
    """Blobs first (content-addressed, harmless if the catalog write fails), then one transaction."""
    for item in kept:
        item.sha256 = ws.blobs.put(encode_jpeg(item.image))
    thumbs = {d.idx: ws.blobs.put(encode_jpeg(thumbnail(d.image), 85)) for d in dropped if d.image is not None}
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
            outcomes = ([Outcome(k.idx, True, image_sha256=k.sha256) for k in kept]
                        + [Outcome(d.idx, False, reason=d.reason, detail=d.detail, thumb_sha256=thumbs.get(d.idx),
                                   lineage=d.lineage) for d in dropped])
            store_synthesis.add_outcomes(con, run_id, outcomes)
            con.commit()
        except BaseException:
            con.rollback()
            raise


def finish_run(ws: Workspace, run_id: str, *, kept: int, rejected: int, cost_usd: float,
               domain_gap: dict[str, Any] | None) -> None:
    with ws.catalog.connect() as con:
        store_synthesis.finish_run(con, run_id, kept=kept, rejected=rejected, cost_usd=cost_usd, domain_gap=domain_gap)


def stored_hashes(ws: Workspace) -> tuple[list[str], list[int]]:
    """(refs, perceptual hashes) of the new objects of every synthetic image already kept."""
    with ws.catalog.connect() as con:
        found = store_synthesis.synthetic_phashes(con)
    refs, hashes = [], []
    for sha, phashes in found:
        for i, h in enumerate(phashes):
            refs.append(f"synthetic:{sha}/{i}")
            hashes.append(int(h, 16))
    return refs, hashes
