"""Every failure record with what mining needs beside it: its frame's camera and device, its crop's vector
from the configured embedder, and its measured attributes (light, size, crowding ... from pixels and boxes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import Progress

from feedback.embeddings.catalog import read_image, read_vectors
from feedback.mining.attributes import measure
from feedback.review.boxes import CROP
from store.settings import Workspace

FAILURES_SQL = """
    SELECT f.id, f.kind, f.true_class, f.predicted_class, f.x1, f.y1, f.x2, f.y2, f.capture_id, f.label_id,
           c.sha256, c.camera, c.device, c.frame_width, c.frame_height, f.iou
    FROM failures f JOIN captures c ON c.id = f.capture_id
    WHERE $model_version::VARCHAR IS NULL OR f.model_version = $model_version
    ORDER BY f.id
"""


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
        rows = con.sql(FAILURES_SQL, params={"model_version": model_version}).fetchall()
        names = dict(con.execute("SELECT id, name FROM classes").fetchall())
        verified = {label_id: np.asarray(boxes, np.float64).reshape(-1, 4) for label_id, boxes in con.sql(
            "SELECT label_id, list([x1, y1, x2, y2] ORDER BY idx) FROM label_boxes WHERE label_id IN "
            "(SELECT label_id FROM failures WHERE $model_version::VARCHAR IS NULL OR model_version = $model_version) "
            "GROUP BY label_id", params={"model_version": model_version}).fetchall()}
        refs, vecs = read_vectors(con, CROP, embedder_name, [r[0] for r in rows]) if rows else ([], None)
    ids = [r[0] for r in rows]
    dim = vecs.shape[1] if vecs is not None and len(refs) else 0
    vectors = np.full((len(rows), dim), np.nan, np.float32)
    if dim:
        position = {ref: i for i, ref in enumerate(ids)}
        vectors[[position[r] for r in refs]] = vecs
    boxes = np.asarray([r[4:8] for r in rows], np.float64).reshape(-1, 4)

    by_sha: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_sha.setdefault(r[10], []).append(i)
    attrs: list[dict[str, Any]] = [{} for _ in rows]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("measuring failure crops", total=len(rows))
        for sha, members in by_sha.items():
            image = read_image(ws, sha)
            for i in members:
                r = rows[i]
                frame = (r[13], r[14]) if r[13] and r[14] else None
                attrs[i] = measure(image, boxes[i], verified.get(r[9], np.zeros((0, 4))), frame_size=frame)
            bar.advance(task, len(members))
    return FailureTable(
        ids=ids, kinds=[r[1] for r in rows],
        class_ids=np.asarray([r[3] if r[1] == "spurious" else r[2] for r in rows], np.int64),
        predicted=[r[3] for r in rows],
        duplicate=np.asarray([r[1] == "spurious" and r[15] is not None for r in rows], bool),
        boxes=boxes, capture_ids=[r[8] for r in rows],
        label_ids=[r[9] for r in rows], shas=[r[10] for r in rows], cameras=[r[11] for r in rows],
        devices=[r[12] for r in rows], attrs=attrs, vectors=vectors, class_names=names,
    )
