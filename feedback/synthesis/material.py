"""The only material generators may copy from: the latest verified labels of real training images, decoded.

Holdout images never become material, so no holdout pixel reaches training through a synthetic image.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np

from feedback.embeddings.catalog import read_image
from feedback.synthesis.port import LabelledFrame
from store.labels import Label, current_labels
from store.settings import Workspace

log = logging.getLogger(__name__)


def material_labels(ws: Workspace, *, with_classes: Collection[int] | None = None) -> list[Label]:
    """Latest verified labels of real training images (by sha256), optionally only those showing `with_classes`."""
    with ws.catalog.connect() as con:
        labels = [x for x in current_labels(con) if x.origin == "real" and x.split == "train"]
    if with_classes is not None:
        wanted = np.asarray(sorted(set(with_classes)), np.int64)
        labels = [x for x in labels if np.isin(x.class_ids, wanted).any()]
    return labels


def load_material(
    ws: Workspace, *, with_classes: Collection[int] | None = None, prefer: Collection[int] = (),
    max_frames: int | None = None, seed: int = 0,
) -> list[LabelledFrame]:
    """Decoded verified frames, in sha256 order.

    `with_classes`: only frames with a box of one of them (None: every verified frame, empty ones too).
    `max_frames`: a seeded sample of at most that many, taking every frame with a `prefer` class first
    (the rare target class's few crops must not be sampled away). Images missing from the blob store
    are logged and left out.
    """
    labels = material_labels(ws, with_classes=with_classes)
    if max_frames is not None and len(labels) > max_frames:
        wanted = np.asarray(sorted(set(prefer)), np.int64)
        first = [x for x in labels if np.isin(x.class_ids, wanted).any()]
        rest = [x for x in labels if not np.isin(x.class_ids, wanted).any()]
        order = np.random.default_rng(seed).permutation(len(rest))
        labels = sorted(first[:max_frames] + [rest[i] for i in order[: max(0, max_frames - len(first))]],
                        key=lambda x: x.image_sha256)
    frames = []
    for label in labels:
        image = read_image(ws, label.image_sha256)
        if image is None:
            continue
        frames.append(LabelledFrame(image_sha256=label.image_sha256, image=image, boxes=label.boxes,
                                    class_ids=label.class_ids))
    return frames
