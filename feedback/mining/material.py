"""Every failure record with what mining needs beside it: its frame's camera and device, its crop's vector
from the configured embedder, and its measured attributes (light, size, crowding ... from pixels and boxes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import Progress

from feedback.embeddings.images import read_image
from feedback.mining.attributes import measure
from store.failures import failure_rows, failures_verified_boxes
from store.labels import catalog_classes
from store.settings import Workspace
from store.vectors import CROP, read_vectors


@dataclass
class FailureTable:
    """Parallel columns, one row per failure, sorted by failure id (so every later step is order-stable)."""

    ids: list[str]
    kinds: list[str]
    class_ids: np.ndarray  # (N,) the class a failure is about: the true class, or the predicted one if spurious
    predicted: list[int | None]  # the model's class (confusion, localisation, spurious)
    duplicate: np.ndarray  # (N,) bool: a spurious box on an object of its class already found (failures.py)
    boxes: np.ndarray  # (N, 4) xyxy px: the crop box
    capture_ids: list[str]
    label_ids: list[str]
    shas: list[str]
    cameras: list[str]
    devices: list[str]
    attrs: list[dict[str, Any]]  # measured; pixel attributes NaN where the image could not be read
    vectors: np.ndarray  # (N, dim) crop embeddings; rows of NaN where none is stored
    class_names: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, class_id: int | None) -> str | None:
        # Devices may report classes the catalog has not adopted yet: those show as their id.
        return None if class_id is None else self.class_names.get(int(class_id), str(class_id))

    @property
    def has_vector(self) -> np.ndarray:
        return np.isfinite(self.vectors).all(axis=1) if self.vectors.size else np.zeros(len(self), bool)


def load_failures(ws: Workspace, embedder_name: str, *, model_version: str | None = None,
                  progress: bool = True) -> FailureTable:
    """The failures of `model_version` (None: every model's) with `embedder_name`'s crop vectors and
    measured attributes. Each frame is decoded once; the catalog is held only while reading rows."""
    with ws.catalog.connect() as con:
        rows = failure_rows(con, model_version)
        names = dict(enumerate(catalog_classes(con)))  # class ids are list positions (store.labels.ensure_classes)
        verified = failures_verified_boxes(con, model_version)
        refs, vecs = read_vectors(con, CROP, embedder_name, [r.id for r in rows]) if rows else ([], None)
    ids = [r.id for r in rows]
    dim = vecs.shape[1] if vecs is not None and len(refs) else 0
    vectors = np.full((len(rows), dim), np.nan, np.float32)
    if dim:
        position = {ref: i for i, ref in enumerate(ids)}
        vectors[[position[r] for r in refs]] = vecs
    boxes = np.asarray([(r.x1, r.y1, r.x2, r.y2) for r in rows], np.float64).reshape(-1, 4)

    by_sha: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_sha.setdefault(r.sha256, []).append(i)
    attrs: list[dict[str, Any]] = [{} for _ in rows]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("measuring failure crops", total=len(rows))
        for sha, members in by_sha.items():
            image = read_image(ws, sha)
            for i in members:
                r = rows[i]
                frame = (r.frame_width, r.frame_height) if r.frame_width and r.frame_height else None
                attrs[i] = measure(image, boxes[i], verified.get(r.label_id, np.zeros((0, 4))), frame_size=frame)
            bar.advance(task, len(members))
    return FailureTable(
        ids=ids, kinds=[r.kind for r in rows],
        class_ids=np.asarray([r.predicted_class if r.kind == "spurious" else r.true_class for r in rows], np.int64),
        predicted=[r.predicted_class for r in rows],
        duplicate=np.asarray([r.kind == "spurious" and r.iou is not None for r in rows], bool),
        boxes=boxes, capture_ids=[r.capture_id for r in rows],
        label_ids=[r.label_id for r in rows], shas=[r.sha256 for r in rows], cameras=[r.camera for r in rows],
        devices=[r.device for r in rows], attrs=attrs, vectors=vectors, class_names=names,
    )
