"""What a failure's crop looks like, measured from pixels and boxes: light, contrast, blur, size, position,
crowding, aspect and colours, each also binned into a word a prompt can use; and a cluster's summary of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from feedback.embeddings.port import crop_with_context
from feedback.review.failures import box_iou

# Numbers every failure gets (NaN when its image is unreadable), in the order clustering reads them.
NUMERIC: tuple[str, ...] = ("brightness", "contrast", "blur", "rel_size", "centre_offset", "overlap",
                            "neighbours", "aspect")
# Words, one per binned attribute, in the order descriptions list them.
BINNED: tuple[str, ...] = ("lighting", "contrast", "focus", "size", "position", "crowding", "shape")
# A cluster "fixes" an attribute when at least this share of its members agree on it; prompts keep what is
# fixed and their variants vary the rest.
FIXED_SHARE = 0.7

# Bin edges. Light and contrast are on 0-255 luma; blur is the variance of the Laplacian at native
# resolution (sharp camera crops measure in the hundreds); rel_size is sqrt(box area / frame area), so
# 0.07 is a 22 px head in a 320 px wide frame, seen from far away.
DARK, BRIGHT = 70.0, 185.0
LOW_CONTRAST, HIGH_CONTRAST = 22.0, 70.0
BLURRY = 60.0
SMALL, LARGE = 0.07, 0.3
CENTRE, EDGE = 0.35, 0.7
OCCLUDED, CROWDED = 0.25, 3
TALL, WIDE = 0.6, 1.6

# Named colours by HSV rule (OpenCV hue 0-180); browns are dark oranges and reds.
_HUES = ((10, "red"), (22, "orange"), (35, "yellow"), (85, "green"), (100, "cyan"), (130, "blue"),
         (150, "purple"), (170, "pink"), (181, "red"))
MIN_COLOUR_SHARE = 0.15


def measure(image_bgr: np.ndarray | None, box: Sequence[float], others: np.ndarray,
            frame_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Attributes of `box` (xyxy px) in its frame; `others` (M, 4) are the frame's other verified boxes.

    Without an image (missing or unreadable) the pixel attributes are NaN and there are no colours; the
    box's size and place in the frame still come from `frame_size` (width, height), else they are NaN too.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = image_bgr.shape[1::-1] if image_bgr is not None else frame_size or (np.nan, np.nan)
    bw, bh = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    out: dict[str, Any] = {
        "rel_size": float(np.sqrt(bw * bh / (w * h))),
        "centre_offset": float(2 * max(abs((x1 + x2) / 2 / w - 0.5), abs((y1 + y2) / 2 / h - 0.5))),
        "truncated": bool(x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1),
        "aspect": float(bw / bh),
        **_crowding(np.array([x1, y1, x2, y2]), np.asarray(others, np.float64).reshape(-1, 4)),
    }
    if image_bgr is None:
        return {**out, "brightness": np.nan, "contrast": np.nan, "blur": np.nan, "colours": []}
    gray = cv2.cvtColor(crop_with_context(image_bgr, np.array([x1, y1, x2, y2])), cv2.COLOR_BGR2GRAY)
    inside = crop_with_context(image_bgr, np.array([x1, y1, x2, y2]), 0.0)
    return {**out, "brightness": float(gray.mean()), "contrast": float(gray.std()),
            "blur": float(cv2.Laplacian(gray, cv2.CV_64F).var()), "colours": named_colours(inside)}


def _crowding(box: np.ndarray, others: np.ndarray) -> dict[str, float]:
    """How much of the box other verified boxes cover (the worst one), and how many stand close by."""
    if len(others):
        # The failure's own verified box (and exact duplicates) is not a neighbour of itself.
        others = others[box_iou(box[None], others)[0] < 0.95]
    if not len(others):
        return {"overlap": 0.0, "neighbours": 0.0}
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = max(float(np.prod(box[2:] - box[:2])), 1e-6)
    reach = 1.5 * float(np.hypot(*(box[2:] - box[:2])))
    centres = (others[:, :2] + others[:, 2:]) / 2
    near = np.hypot(*(centres - (box[:2] + box[2:]) / 2).T) <= reach
    return {"overlap": float(inter.max() / area), "neighbours": float(near.sum())}


def named_colours(image_bgr: np.ndarray, *, limit: int = 3) -> list[str]:
    """The colour names covering at least MIN_COLOUR_SHARE of the pixels, most first (at most `limit`)."""
    if image_bgr.size == 0:
        return []
    h, w = image_bgr.shape[:2]
    scale = min(1.0, 24 / max(h, w))  # a thumbnail is plenty for a colour histogram
    small = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.int32)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    edges = np.array([e for e, _ in _HUES])
    names = np.array([n for _, n in _HUES], dtype=object)[np.searchsorted(edges, hue, side="right")]
    names = np.where((np.isin(names, ["orange", "red"])) & (val < 150), "brown", names)
    names = np.where(sat < 60, np.where(val > 200, "white", "grey"), names)
    names = np.where(val < 50, "black", names)
    counts = Counter(names.tolist())
    return [n for n, c in counts.most_common(limit) if c / len(names) >= MIN_COLOUR_SHARE]


def bins(attrs: dict[str, Any]) -> dict[str, str | None]:
    """Each measured number as a word; None where it could not be measured."""

    def cut(value: float, low: float, high: float, words: tuple[str, str, str]) -> str | None:
        if value is None or np.isnan(value):
            return None
        return words[0] if value < low else words[2] if value > high else words[1]

    if np.isnan(attrs["centre_offset"]):
        position = None
    elif attrs["truncated"] or attrs["centre_offset"] >= EDGE:
        position = "edge"
    else:
        position = "centre" if attrs["centre_offset"] <= CENTRE else "off-centre"
    if attrs["overlap"] >= OCCLUDED:
        crowding = "occluded"
    else:
        crowding = "crowded" if attrs["neighbours"] >= CROWDED else "isolated"
    blur = attrs["blur"]
    return {
        "lighting": cut(attrs["brightness"], DARK, BRIGHT, ("dark", "normal", "bright")),
        "contrast": cut(attrs["contrast"], LOW_CONTRAST, HIGH_CONTRAST, ("low", "normal", "high")),
        "focus": None if np.isnan(blur) else "blurry" if blur < BLURRY else "sharp",
        "size": cut(attrs["rel_size"], SMALL, LARGE, ("small", "medium", "large")),
        "position": position,
        "crowding": crowding,
        "shape": cut(attrs["aspect"], TALL, WIDE, ("tall", "square", "wide")),
    }


def summarise(values: Sequence[Any]) -> dict[str, Any]:
    """The most common value among members (None counts as unknown), its share, and whether it is fixed."""
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return {"value": None, "share": 0.0, "fixed": False}
    # Ties go to the alphabetically first value, so a description never depends on member order.
    value, n = min(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    share = n / len(values)
    return {"value": value, "share": round(share, 3), "fixed": share >= FIXED_SHARE}


def describe(attrs: Sequence[dict[str, Any]], categorical: dict[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    """A cluster in words: per binned attribute its usual word, share and whether it is fixed; the medians of
    the numbers; the colours at least half the members show; and `categorical` extras (confused-with
    class, camera, device, zero-shot tags) summarised alike."""
    binned = [bins(a) for a in attrs]
    numbers = {k: np.array([a[k] for a in attrs], np.float64) for k in NUMERIC}
    colours = Counter(c for a in attrs for c in set(a["colours"]))
    return {
        "bins": {k: summarise([b[k] for b in binned]) for k in BINNED},
        "medians": {k: (round(float(np.nanmedian(v)), 4) if np.isfinite(v).any() else None)
                    for k, v in numbers.items()},
        "colours": [{"name": c, "share": round(n / len(attrs), 3)}
                    for c, n in sorted(colours.items(), key=lambda kv: (-kv[1], kv[0])) if n / len(attrs) >= 0.5],
        **{k: summarise(list(v)) for k, v in (categorical or {}).items()},
    }
