"""The rare-aware training recipe: the levers that make a rare class seen, each recorded and switchable.

Repeat-factor sampling (LVIS), class weights in the loss, a training size chosen from the rare boxes, rare crops
pasted into other training frames, and a calibration split carved from training data for the checkpoint choice
and the per-class thresholds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from feedback.review.probe import rare_classes
from store.datasets import YoloItem

# COCO calls an object under 32 px a side "small", and detectors lose most of their AP there.
MIN_RARE_PX = 32.0
STRIDE = 32  # YOLO's largest stride: training sizes are its multiples


@dataclass(frozen=True)
class Recipe:
    """Levers; `off()` is the recipe from before (every class alike, one global threshold)."""

    repeat_threshold: float | None = 1.0  # t in r(c) = max(1, sqrt(t / f(c))); None: no resampling
    class_weight_power: float = 0.0  # ultralytics' cls_pw; off unless measured to help (bench/loop.py)
    min_rare_px: float | None = MIN_RARE_PX  # train at the size where the rare median box reaches this
    copy_paste: float = 0.0  # pasted images per training image holding a rare class (copy_paste.py); 0: off
    calibration_share: float = 0.15  # real training images kept for checkpoint choice and thresholds; 0: off
    rare_checkpoint: bool = True  # the epoch best on the calibration split's rare-aware fitness, not the last
    operating_precision: float | Mapping[str, float] = 0.5  # per-class thresholds' target on calibration
    rare_classes: tuple[int, ...] = field(default=())  # filled in by `for_data`: what the levers favour

    @classmethod
    def off(cls) -> Recipe:
        return cls(repeat_threshold=None, min_rare_px=None, calibration_share=0.0, rare_checkpoint=False)

    @property
    def active(self) -> bool:
        return bool(self.rare_classes) and (self.repeat_threshold is not None or self.min_rare_px is not None
                                            or self.calibration_share > 0 or self.copy_paste > 0
                                            or self.class_weight_power > 0)

    def recorded(self) -> dict[str, Any]:
        """The levers as the run's params record them (lineage)."""
        out = asdict(self)
        out["rare_classes"] = list(self.rare_classes)
        out["operating_precision"] = (dict(self.operating_precision)
                                      if isinstance(self.operating_precision, Mapping) else self.operating_precision)
        return out


def rare_in(items: Sequence[YoloItem], n_classes: int, watch: Sequence[int] = ()) -> list[int]:
    """The rare classes among `items`' boxes as selection counts them (feedback.review.probe), plus `watch`."""
    counts = dict.fromkeys(range(n_classes), 0)
    for item in items:
        for c in item.class_ids:
            counts[c] = counts.get(c, 0) + 1
    return rare_classes(counts, watch)


def for_data(recipe: Recipe, rare: Sequence[int]) -> Recipe:
    """The recipe as it applies to a data set whose rare (or watched) classes are `rare`: no rare class, no levers."""
    return replace(recipe, rare_classes=tuple(sorted(rare))) if rare else Recipe.off()


# ----------------------------------------------------------------------------- repeat-factor sampling


def repeat_factors(items: Sequence[YoloItem], t: float) -> dict[str, float]:
    """LVIS's rule (Gupta et al. 2019): class c's factor max(1, sqrt(t / f(c))), f(c) the share of training
    images holding c; an image takes its classes' largest (its rarest class's). Only images above 1 appear."""
    if t <= 0:
        raise ValueError(f"repeat threshold t must be > 0; got {t}")
    if not items:
        return {}
    holding: dict[int, int] = {}
    for item in items:
        for c in set(item.class_ids):
            holding[c] = holding.get(c, 0) + 1
    factor = {c: max(1.0, math.sqrt(t / (n / len(items)))) for c, n in holding.items()}
    out = {}
    for item in items:
        r = max((factor[c] for c in set(item.class_ids)), default=1.0)
        if r > 1.0:
            out[item.image_sha256] = r
    return out


def draw_repeats(factors: Mapping[str, float], seed: int) -> dict[str, int]:
    """Whole repeats from fractional factors: floor(r), plus one with probability r - floor(r), seeded per image
    (by its hash) so that the same seed and data give the same copies whatever the order."""
    out = {}
    for sha, r in factors.items():
        u = _unit(f"{seed}:repeat:{sha}")
        out[sha] = int(math.floor(r)) + int(u < r - math.floor(r))
    return out


# ----------------------------------------------------------------------------- resolution


def rare_box_sides(items: Sequence[YoloItem], rare: Sequence[int]) -> np.ndarray:
    """Each rare box's side (sqrt of its area) as a share of its image's longer side: what survives a resize."""
    sides = []
    for item in items:
        if not item.width or not item.height:
            continue
        for line in item.label.splitlines():
            parts = line.split()
            if parts and int(parts[0]) in rare:
                w, h = float(parts[3]) * item.width, float(parts[4]) * item.height
                sides.append(math.sqrt(w * h) / max(item.width, item.height))
    return np.asarray(sides, dtype=np.float64)


def choose_imgsz(sides: np.ndarray, min_px: float, lowest: int, highest: int) -> int:
    """The smallest training size (a multiple of the stride) at which the median rare box is `min_px` a side,
    within [lowest, highest]; `lowest` when there is no rare box to measure."""
    if not len(sides):
        return lowest
    want = min_px / float(np.median(sides))
    size = int(math.ceil(want / STRIDE) * STRIDE)
    return int(min(max(size, lowest), highest))


# ----------------------------------------------------------------------------- calibration split


def carve_calibration(items: Sequence[YoloItem], rare: Sequence[int], share: float, seed: int) -> set[str]:
    """`share` of the real training images, drawn apart for images with and without a rare class so that
    the calibration split holds its share of the rare boxes; synthetic images and the holdout never."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"calibration share must lie in [0, 1); got {share}")
    if share == 0.0:
        return set()
    real = [i for i in items if i.split == "train" and i.origin == "real"]
    carved: set[str] = set()
    for group in ([i for i in real if set(i.class_ids) & set(rare)], [i for i in real if not set(i.class_ids) & set(rare)]):
        ranked = sorted(group, key=lambda i: _unit(f"{seed}:calibration:{i.image_sha256}"))
        carved |= {i.image_sha256 for i in ranked[: round(share * len(group))]}
    return carved


def _unit(key: str) -> float:
    """A number in [0, 1) fixed by `key`: seeded draws that do not depend on iteration order."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


# ----------------------------------------------------------------------------- checkpoint choice


def rare_fitness(map50_95: float, rare_ap50: Sequence[float]) -> float:
    """Half the overall mAP@0.5:0.95 (every class, as ultralytics' own fitness), half the rare classes' mean
    AP@0.5: an epoch that finds the rare class at the cost of the rest is not the best, nor the reverse."""
    if not len(rare_ap50):
        return float(map50_95)
    return 0.5 * float(map50_95) + 0.5 * float(np.mean(rare_ap50))
