"""The only material generators may copy from: the latest verified labels of real training images, decoded.

Holdout images never become material, so no holdout pixel reaches training through a synthetic image.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from feedback.embeddings.images import read_image
from feedback.synthesis.port import LabelledFrame
from store.labels import Label, current_labels
from store.settings import Workspace


def material_labels(ws: Workspace, *, with_classes: Collection[int] | None = None) -> list[Label]:
    """Latest verified labels of real training images (by sha256), optionally only those showing `with_classes`."""
    with ws.catalog.connect() as con:
        labels = [x for x in current_labels(con) if x.origin == "real" and x.split == "train"]
    if with_classes is not None:
        wanted = np.asarray(sorted(set(with_classes)), np.int64)
        labels = [x for x in labels if np.isin(x.class_ids, wanted).any()]
    return labels


def sample(labels: list[Label], *, max_frames: int | None, prefer: Collection[int] = (),
           seed: int = 0) -> list[Label]:
    """At most `max_frames` labels (seeded), every one showing a `prefer` class first, in sha256 order.

    The rare target class's few crops must not be sampled away.
    """
    if max_frames is None or len(labels) <= max_frames:
        return labels
    wanted = np.asarray(sorted(set(prefer)), np.int64)
    first = [x for x in labels if np.isin(x.class_ids, wanted).any()]
    rest = [x for x in labels if not np.isin(x.class_ids, wanted).any()]
    order = np.random.default_rng(seed).permutation(len(rest))
    return sorted(first[:max_frames] + [rest[i] for i in order[: max(0, max_frames - len(first))]],
                  key=lambda x: x.image_sha256)


def decode(ws: Workspace, labels: list[Label]) -> list[LabelledFrame]:
    """The labels' frames with their images; images missing from the blob store are logged and left out."""
    frames = []
    for label in labels:
        image = read_image(ws, label.image_sha256)
        if image is not None:
            frames.append(LabelledFrame(label.image_sha256, image, label.boxes, label.class_ids))
    return frames


def load_material(
    ws: Workspace, *, with_classes: Collection[int] | None = None, prefer: Collection[int] = (),
    max_frames: int | None = None, seed: int = 0,
) -> list[LabelledFrame]:
    """Decoded verified frames, in sha256 order: only those with a box of `with_classes` when given (None:
    every verified frame, empty ones too), at most `max_frames` of them (see `sample`)."""
    labels = material_labels(ws, with_classes=with_classes)
    return decode(ws, sample(labels, max_frames=max_frames, prefer=prefer, seed=seed))
