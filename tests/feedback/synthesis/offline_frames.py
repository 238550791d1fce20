"""Hand-made verified frames for the offline generators' tests: textured backgrounds and objects one can find again."""

from __future__ import annotations

import cv2
import numpy as np

from feedback.synthesis.port import LabelledFrame

HELMET, BARE, VEST = 0, 1, 2


def background(seed: int, h: int = 160, w: int = 220) -> np.ndarray:
    """Smooth coloured texture: no two places look alike, so a pasted object is found only where it is."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 200, (h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def pattern(seed: int, h: int, w: int) -> np.ndarray:
    """A busy, unique object: random blocks plus a diagonal gradient (template matching locks onto it)."""
    rng = np.random.default_rng(seed)
    blocks = cv2.resize(rng.uniform(0, 255, (6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    ramp = (np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
            + np.linspace(0, 60, h, dtype=np.float32)[:, None, None])
    return np.clip(blocks * 0.7 + ramp, 0, 255).astype(np.uint8)


def frame(sha: str, image: np.ndarray, boxes: list[tuple[float, float, float, float]],
          classes: list[int]) -> LabelledFrame:
    return LabelledFrame(sha, image, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64))


def donor(seed: int = 1, box: tuple[int, int, int, int] = (20, 30, 50, 70)) -> tuple[LabelledFrame, np.ndarray]:
    """A frame holding one bare head (the known pattern) at `box`; returns it and the pattern."""
    image = background(100 + seed)
    x1, y1, x2, y2 = box
    obj = pattern(seed, y2 - y1, x2 - x1)
    image[y1:y2, x1:x2] = obj
    return frame(f"donor{seed}", image, [box], [BARE]), obj


def recipient(seed: int = 2) -> LabelledFrame:
    """A frame with a yellow helmet at (60, 50, 100, 90) and a vest far from it."""
    image = background(200 + seed)
    image[50:90, 60:100] = (0, 215, 255)
    image[100:150, 150:200] = (0, 110, 255)
    return frame(f"recipient{seed}", image, [(60, 50, 100, 90), (150, 100, 200, 150)], [HELMET, VEST])


def find(image: np.ndarray, template: np.ndarray) -> tuple[tuple[int, int], float]:
    """Where `template` matches best in `image` (grey, normalised correlation: blind to gain and offset)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    tpl = cv2.cvtColor(template, cv2.COLOR_BGR2GRAY).astype(np.float32)
    scores = cv2.matchTemplate(grey, tpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, location = cv2.minMaxLoc(scores)
    return location, float(best)


def changed_mask(shape: tuple[int, ...], regions: list[list[int]]) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in regions:
        mask[y1:y2, x1:x2] = True
    return mask
