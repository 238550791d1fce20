"""The embedder port: BGR images or box crops in, L2-normalised float32 vectors out.

Adapters: `detector.DetectorEmbedder` (the offline default) and `clip.ImageEmbedder`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

# Crops keep this share of the box's size as context on every side: a bare head is told from a
# helmeted one partly by what surrounds it (hair, the hat's brim, shoulders).
CROP_CONTEXT = 0.25


@runtime_checkable
class Embedder(Protocol):
    """`name` says which model and which weights made a vector; vectors of different names never mix."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 unit rows for whole HxWx3 uint8 BGR images."""
        ...

    def embed_boxes(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(len(boxes), dim) float32 unit rows for the image's boxes, each cropped with context."""
        ...


def crop_with_context(image_bgr: np.ndarray, box_xyxy: np.ndarray, context: float = CROP_CONTEXT) -> np.ndarray:
    """The box grown by `context` of its width/height on each side, clipped to the image; never empty."""
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    dx, dy = (x2 - x1) * context, (y2 - y1) * context
    left, top = int(max(0, np.floor(x1 - dx))), int(max(0, np.floor(y1 - dy)))
    right, bottom = int(min(w, np.ceil(x2 + dx))), int(min(h, np.ceil(y2 + dy)))
    # A degenerate box still yields one pixel, so every box has a vector.
    right, bottom = max(right, min(left + 1, w)), max(bottom, min(top + 1, h))
    return image_bgr[top:bottom, left:right]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
