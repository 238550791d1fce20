"""Which class to make more of, and which class's instances to turn into it, read from the workspace's own labels.

The target is the rarest class among verified real training boxes; the confusable one is what the model
confuses it with in verified reviews, else the class whose boxes are most alike in shape and size.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from feedback.synthesis.material import material_labels
from store.failures import most_confused_class
from store.settings import Workspace
from store.synthesis import image_sizes


def class_counts(ws: Workspace) -> Counter[int]:
    """Verified boxes per class over real training images."""
    counts: Counter[int] = Counter()
    for label in material_labels(ws):
        counts.update(int(c) for c in label.class_ids)
    return counts


def rarest_class(ws: Workspace) -> int:
    """The class with the fewest verified real training boxes, among those with at least one (a crop to copy)."""
    counts = class_counts(ws)
    if not counts:
        raise LookupError("no verified real training box in the workspace: import or review some first")
    return min(counts, key=lambda c: (counts[c], c))


def most_confused(ws: Workspace, target: int) -> int | None:
    """The class the model most often confused with `target` in verified reviews (either way round), or None."""
    with ws.catalog.connect() as con:
        return most_confused_class(con, target)


def most_alike(ws: Workspace, target: int) -> int | None:
    """The class whose verified boxes' median aspect and size relative to the frame are nearest `target`'s."""
    with ws.catalog.connect() as con:
        sizes = image_sizes(con)
    shape: dict[int, list[tuple[float, float]]] = {}
    for label in material_labels(ws):
        fw, fh = sizes[label.image_sha256]
        for (x1, y1, x2, y2), c in zip(label.boxes, label.class_ids, strict=True):
            if x2 > x1 and y2 > y1:
                shape.setdefault(int(c), []).append((np.log((x2 - x1) / (y2 - y1)),
                                                     0.5 * np.log((x2 - x1) * (y2 - y1) / (fw * fh))))
    if target not in shape:
        return None
    medians = {c: np.median(np.asarray(v), axis=0) for c, v in shape.items()}
    others = [c for c in medians if c != target]
    if not others:
        return None
    return min(others, key=lambda c: (float(np.linalg.norm(medians[c] - medians[target])), c))


def confusable_for(ws: Workspace, target: int) -> int:
    """What swap replaces to make `target`: the most confused class, else the most alike in shape."""
    found = most_confused(ws, target)
    if found is None:
        found = most_alike(ws, target)
    if found is None:
        raise LookupError(f"no other class with verified boxes to swap into class {target}")
    return found
