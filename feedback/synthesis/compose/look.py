"""What a failure cluster's measured attributes ask of a synthetic object: its size, place, lighting and sharpness.

Attributes come from failure mining (`SynthesisRequest.attributes`); every key is optional, unknown keys are
ignored, and a value may be a level name or a number (or a dict holding `level`/`value`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# Brightness factors on Lab lightness per level; a draw in the range makes the set vary.
_BRIGHTNESS = {"dark": (0.35, 0.65), "dim": (0.55, 0.8), "bright": (1.2, 1.45)}
# Gaussian blur sigma, in pixels per 64 px of object height, per level.
_BLUR = {"blurry": (1.2, 2.4), "blur": (1.2, 2.4), "soft": (0.6, 1.2)}
# Object size relative to the frame, sqrt(box area / frame area).
_SIZE = {"tiny": 0.03, "small": 0.06, "distant": 0.06, "medium": 0.12, "large": 0.22, "close": 0.22}
_BLURRY_LAPLACIAN = 100.0  # variance of the Laplacian below which a crop reads as blurry


@dataclass(frozen=True)
class Look:
    brightness: tuple[float, float] | None = None  # factor range on lightness
    target_lightness: float | None = None  # mean Lab L (0..100) the object should have
    blur: tuple[float, float] | None = None  # sigma range per 64 px of object height
    rel_size: float | None = None  # median sqrt(box area / frame area)
    rel_size_spread: float = 0.25  # log-normal sigma around rel_size
    position: str = "any"  # any | edge | centre


def _level(value: Any) -> tuple[str | None, float | None]:
    if isinstance(value, dict):
        level, number = value.get("level") or value.get("name"), value.get("value")
        return (str(level).lower() if level is not None else None), (float(number) if number is not None else None)
    if isinstance(value, bool) or value is None:
        return None, None
    if isinstance(value, int | float):
        return None, float(value)
    return str(value).lower(), None


def look_from_attributes(attributes: dict[str, Any]) -> Look:
    """The look a cluster asks for; an empty dict asks for nothing (the object keeps its own look)."""
    kwargs: dict[str, Any] = {}
    level, number = _level(attributes.get("brightness"))
    if level in _BRIGHTNESS:
        kwargs["brightness"] = _BRIGHTNESS[level]
    elif number is not None:  # a mean grey level (0..255) measured on the cluster's crops
        kwargs["target_lightness"] = float(np.clip(number, 0, 255)) / 255.0 * 100.0
    level, number = _level(attributes.get("blur", attributes.get("sharpness")))
    if level in _BLUR:
        kwargs["blur"] = _BLUR[level]
    elif number is not None and number < _BLURRY_LAPLACIAN:  # variance of the Laplacian
        kwargs["blur"] = _BLUR["blurry"] if number < _BLURRY_LAPLACIAN / 2 else _BLUR["soft"]
    level, number = _level(attributes.get("rel_size", attributes.get("size")))
    if number is not None and 0 < number < 1:
        kwargs["rel_size"] = number
    elif level in _SIZE:
        kwargs["rel_size"] = _SIZE[level]
    spread = attributes.get("rel_size_spread")
    if isinstance(spread, int | float) and spread > 0:
        kwargs["rel_size_spread"] = float(spread)
    level, _ = _level(attributes.get("position"))
    if level in ("edge", "centre", "center"):
        kwargs["position"] = "centre" if level == "center" else level
    return Look(**kwargs)


def apply_look(pixels_bgr: np.ndarray, look: Look, object_height: float,
               rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """The object's pixels (float32 BGR 0..255) with the look's lighting and blur, and what was applied."""
    applied: dict[str, float] = {}
    out = pixels_bgr
    if look.brightness is not None or look.target_lightness is not None:
        lab = cv2.cvtColor(np.clip(out, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
        if look.brightness is not None:
            factor = float(rng.uniform(*look.brightness))
        else:
            factor = float(np.clip(look.target_lightness / max(float(lab[..., 0].mean()), 1.0), 0.2, 3.0))
        lab[..., 0] = np.clip(lab[..., 0] * factor, 0, 100)
        out = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0, 0, 255)
        applied["brightness_factor"] = round(factor, 4)
    if look.blur is not None:
        sigma = float(rng.uniform(*look.blur)) * max(object_height, 1.0) / 64.0
        if sigma >= 0.3:
            out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), sigma)
        applied["blur_sigma"] = round(sigma, 4)
    return out.astype(np.float32), applied
