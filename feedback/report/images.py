"""The report's pictures: crops of boxes and thumbnails of frames, written as JPEGs under the cycle folder.

The data names each picture by its path relative to that folder; the HTML inlines it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from store.settings import Workspace

IMAGES = "report_images"  # under the cycle folder; image paths in the data are relative to that folder
CROP = 160
RED, GREEN, AMBER = (50, 50, 220), (60, 180, 60), (0, 170, 255)


class ReportImages:
    """Crops and thumbnails written under the cycle folder, named by their path relative to it."""

    def __init__(self, ws: Workspace, cycle_dir: Path) -> None:
        self.ws, self.cycle_dir, self.count = ws, cycle_dir, 0

    def blob(self, sha: str | None) -> np.ndarray | None:
        if not sha:
            return None
        try:
            data = self.ws.blobs.get(sha)
        except (FileNotFoundError, KeyError, OSError):
            return None
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def save(self, image: np.ndarray | None, stem: str) -> str | None:
        if image is None or not image.size:
            return None
        folder = self.cycle_dir / IMAGES
        folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        name = f"{self.count:03d}-{stem}.jpg"
        if not cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, 88]):
            raise OSError(f"could not write {folder / name}")
        return f"{IMAGES}/{name}"


def crop(image: np.ndarray, box: Sequence[float], colour: tuple[int, int, int],
         context: Iterable[Sequence[float]] = (), side: int = CROP) -> np.ndarray:
    """The box with half its size again around it (at least 16 px), scaled to `side`, outlined; nearby boxes thin."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = max(16.0, 0.5 * max(x2 - x1, y2 - y1))
    cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    cx2, cy2 = int(min(width, np.ceil(x2 + pad))), int(min(height, np.ceil(y2 + pad)))
    part = image[cy1:max(cy2, cy1 + 1), cx1:max(cx2, cx1 + 1)]
    scale = side / max(part.shape[:2])
    part = cv2.resize(part, (max(1, round(part.shape[1] * scale)), max(1, round(part.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    def corners(b: Sequence[float]) -> tuple[tuple[int, int], tuple[int, int]]:
        return ((round((b[0] - cx1) * scale), round((b[1] - cy1) * scale)),
                (round((b[2] - cx1) * scale), round((b[3] - cy1) * scale)))

    for other in context:
        cv2.rectangle(part, *corners(other), GREEN, 1)
    cv2.rectangle(part, *corners((x1, y1, x2, y2)), colour, 2)
    return part


def thumbnail(image: np.ndarray, boxes: Iterable[Sequence[float]] = (), side: int = 240) -> np.ndarray:
    scale = min(1.0, side / max(image.shape[:2]))
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    for b in boxes:
        cv2.rectangle(out, (round(b[0] * scale), round(b[1] * scale)), (round(b[2] * scale), round(b[3] * scale)),
                      AMBER, 1)
    return out

