"""Compositing for the offline generators: map a verified box onto another place, colour-match it, blend it in.

The object's box maps exactly onto the destination box, so its label holds by construction; only pixels
under the feathered mask change.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # xyxy, continuous pixel edges


@dataclass(frozen=True)
class Patch:
    """Warped source pixels for the integer rect `rect` of the destination frame, and their blend weights.

    `alpha` is 1 over the destination box, fades to 0 across the margin, and is 0 where the source
    frame had no pixels.
    """

    rect: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive) in the destination frame
    pixels: np.ndarray  # h x w x 3 float32 BGR, 0..255
    alpha: np.ndarray  # h x w float32, 0..1


def box_size(box: Box) -> tuple[float, float]:
    return box[2] - box[0], box[3] - box[1]


def grown(box: Box, margin: float) -> Box:
    """`box` grown by `margin` of its width/height on every side."""
    w, h = box_size(box)
    return box[0] - margin * w, box[1] - margin * h, box[2] + margin * w, box[3] + margin * h


def patch_rect(dst_box: Box, margin: float, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The integer rect a patch for `dst_box` with `margin` touches, clipped to the frame."""
    x1, y1, x2, y2 = grown(dst_box, margin)
    h, w = frame_shape[:2]
    return max(0, int(np.floor(x1))), max(0, int(np.floor(y1))), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))


def warp_patch(source: np.ndarray, src_box: Box, dst_box: Box, dst_shape: tuple[int, ...], *, margin: float,
               feather: float) -> Patch:
    """Source pixels around `src_box` scaled (per axis) so that `src_box` lands exactly on `dst_box`.

    The margin (a share of the box's size) carries the source's surroundings; `feather` is the share of
    the margin over which the weight falls from 1 to 0 (smoothstep), so the seam is soft but the box is
    wholly the source's.
    """
    sw, sh = box_size(src_box)
    dw, dh = box_size(dst_box)
    if min(sw, sh, dw, dh) <= 0:
        raise ValueError(f"boxes must have a positive size: source {src_box}, destination {dst_box}")
    rect = patch_rect(dst_box, margin, dst_shape)
    x0, y0, x1, y1 = rect
    sx, sy = dw / sw, dh / sh
    # Edge coordinates map as x_dst = sx * (x_src - src.x1) + dst.x1; OpenCV samples at pixel centres
    # (edge - 0.5), and the output starts at the rect's corner.
    matrix = np.array([[sx, 0.0, sx * (0.5 - src_box[0]) + dst_box[0] - 0.5 - x0],
                       [0.0, sy, sy * (0.5 - src_box[1]) + dst_box[1] - 0.5 - y0]])
    size = (x1 - x0, y1 - y0)
    interp = cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_LINEAR
    pixels = cv2.warpAffine(source.astype(np.float32), matrix, size, flags=interp, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpAffine(np.ones(source.shape[:2], np.float32), matrix, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = feather_mask(rect, dst_box, margin, feather) * np.clip(valid, 0.0, 1.0)
    # Inside the destination box the object is wholly the source's, even at a sub-pixel frame edge.
    inside = _box_pixels(rect, dst_box)
    alpha[inside] = 1.0
    return Patch(rect, pixels, alpha.astype(np.float32))


def feather_mask(rect: tuple[int, int, int, int], box: Box, margin: float, feather: float) -> np.ndarray:
    """Weights over `rect`: 1 on the box and the inner (1 - feather) of the margin, easing to 0 at its edge."""
    x0, y0, x1, y1 = rect
    w, h = box_size(box)
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5
    # Distance outside the box, in units of the margin, along each axis; the larger decides.
    dx = np.maximum(np.maximum(box[0] - xs, xs - box[2]), 0) / max(margin * w, 1e-6)
    dy = np.maximum(np.maximum(box[1] - ys, ys - box[3]), 0) / max(margin * h, 1e-6)
    d = np.maximum(dy[:, None], dx[None, :])
    if feather <= 0:
        return (d <= 1).astype(np.float32)
    t = np.clip((1.0 - d) / feather, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _box_pixels(rect: tuple[int, int, int, int], box: Box) -> np.ndarray:
    """Pixels of `rect` whose centres lie in `box`."""
    x0, y0, x1, y1 = rect
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    return ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None, :]


def lab_stats(pixels_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in CIE Lab of an (N, 3) or HxWx3 BGR array (0..255)."""
    lab = cv2.cvtColor(np.asarray(pixels_bgr, np.float32).reshape(-1, 1, 3) / 255.0, cv2.COLOR_BGR2Lab).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def colour_transfer(pixels_bgr: np.ndarray, source: tuple[np.ndarray, np.ndarray],
                    target: tuple[np.ndarray, np.ndarray], *, max_ratio: float = 1.5) -> np.ndarray:
    """Move pixels from the `source` (mean, std) in Lab towards the `target` one (Reinhard et al.).

    The std ratio is clamped to [1/max_ratio, max_ratio]: a flat neighbourhood must not blow up the object's
    contrast.
    """
    (mean_s, std_s), (mean_t, std_t) = source, target
    ratio = np.clip(std_t / np.maximum(std_s, 1e-3), 1.0 / max_ratio, max_ratio)
    shape = pixels_bgr.shape
    lab = cv2.cvtColor(np.asarray(pixels_bgr, np.float32).reshape(-1, 1, 3) / 255.0, cv2.COLOR_BGR2Lab)
    lab = (lab - mean_s) * ratio + mean_t
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    bgr = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2BGR) * 255.0
    return np.clip(bgr, 0, 255).reshape(shape)


def neighbourhood(frame: np.ndarray, box: Box, scale: float = 1.0) -> np.ndarray:
    """(N, 3) pixels around `box` (the box grown by `scale` of its size on each side), the box itself left out.

    These say how the place is lit: the object itself (a yellow helmet) would bias the estimate.
    """
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = patch_rect(box, scale, frame.shape)
    region = frame[y0:y1, x0:x1]
    keep = ~_box_pixels((x0, y0, x1, y1), box)
    if keep.sum() < 16:  # the box fills its neighbourhood: the whole frame says more
        return frame.reshape(-1, 3)
    return region[keep]


def blend(frame: np.ndarray, patch: Patch) -> np.ndarray:
    """A copy of `frame` with the patch blended in; pixels where its weight is 0 are untouched."""
    out = frame.copy()
    x0, y0, x1, y1 = patch.rect
    region = out[y0:y1, x0:x1]
    a = patch.alpha[..., None]
    mixed = np.rint(a * patch.pixels + (1.0 - a) * region.astype(np.float32))
    region[...] = np.where(a > 0, np.clip(mixed, 0, 255), region).astype(np.uint8)
    return out
