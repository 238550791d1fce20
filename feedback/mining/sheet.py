"""Contact sheets: one PNG per failure cluster showing its medoid crops, so a person sees a blind spot at a glance.

Each crop keeps the embedder's context around its box, which is drawn in; a caption says what the cluster is.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from feedback.contact_sheet import write_png
from feedback.embeddings.images import read_image
from feedback.embeddings.port import CROP_CONTEXT
from store.clusters import Cluster
from store.failures import failure_crops
from store.settings import Workspace

TILE = 128
CAPTION = 36


def sheet_dir(ws: Workspace) -> Path:
    return ws.settings.workspace / "mining" / "sheets"


def write_sheet(ws: Workspace, cluster: Cluster) -> Path:
    """Write `cluster`'s contact sheet (its medoids left to right, nearest the centre first); returns its path."""
    with ws.catalog.connect() as con:
        found = failure_crops(con, cluster.medoids)
    tiles = []
    for failure_id in cluster.medoids:
        if failure_id not in found:
            continue  # re-reviewed since: its record was replaced
        sha, *box = found[failure_id]
        image = read_image(ws, sha)
        tiles.append(_tile(image, np.asarray(box, np.float64)))
    body = np.hstack(tiles) if tiles else np.full((TILE, TILE, 3), 40, np.uint8)
    bins = cluster.description.get("bins", {})
    words = ", ".join(f"{k}={v['value']}" for k, v in bins.items() if v.get("fixed") and v.get("value"))
    caption = np.full((CAPTION, max(body.shape[1], 6 * TILE), 3), 255, np.uint8)
    title = f"{cluster.id}  {cluster.class_name} {cluster.kind}{' (noise)' if cluster.noise else ''}  n={cluster.size}"
    cv2.putText(caption, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(caption, words or "nothing fixed", (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (60, 60, 60), 1,
                cv2.LINE_AA)
    canvas = np.full((CAPTION + TILE, caption.shape[1], 3), 255, np.uint8)
    canvas[:CAPTION] = caption
    canvas[CAPTION:, : body.shape[1]] = body
    return write_png(sheet_dir(ws) / f"{cluster.id}.png", canvas)


def _tile(image: np.ndarray | None, box: np.ndarray) -> np.ndarray:
    """The box with context, letterboxed into a TILE square, the box outlined; grey when the image is gone."""
    tile = np.full((TILE, TILE, 3), 40, np.uint8)
    if image is None:
        return tile
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * CROP_CONTEXT, (y2 - y1) * CROP_CONTEXT
    left, top = int(max(0, np.floor(x1 - dx))), int(max(0, np.floor(y1 - dy)))
    right, bottom = int(min(w, np.ceil(x2 + dx))), int(min(h, np.ceil(y2 + dy)))
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    crop = image[top:bottom, left:right]
    scale = TILE / max(crop.shape[:2])
    cw, ch = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    ox, oy = (TILE - cw) // 2, (TILE - ch) // 2
    tile[oy:oy + ch, ox:ox + cw] = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA if scale < 1
                                              else cv2.INTER_LINEAR)
    p1 = (int(ox + (x1 - left) * scale), int(oy + (y1 - top) * scale))
    p2 = (int(ox + (x2 - left) * scale), int(oy + (y2 - top) * scale))
    cv2.rectangle(tile, p1, p2, (0, 0, 255), 1)
    return tile
