"""Where an edit generator edits a frame: a crop around one verified box, and the neighbourhood blended back.

Shared by gemini-edit, imagen's inpainting and qwen-image-edit, so every edit model crops and blends alike: the box
keeps its place and becomes the target class by construction; pixels outside the neighbourhood stay the real frame's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from feedback.synthesis.port import LabelledFrame, SynthesisRequest

CROP_SCALE = 3.0  # the crop's side in box sides: the model sees the head with its shoulders and surroundings
MIN_CROP_PX = 64
SEND_PX = 1024  # image models work at about 1K; a 30 px head sent as is would come back as mush
BLEND_MARGIN = 0.25  # the neighbourhood is the box grown by this share of its size, feathered to nothing at its edge
MIN_BOX_PX = 8  # smaller boxes are too few pixels to edit
Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in whole pixels, end exclusive


@dataclass(frozen=True)
class EditSite:
    """One verified box to edit: the crop the model sees and the neighbourhood that is blended back."""

    frame: LabelledFrame
    box_index: int
    crop: Box
    region: Box


def edit_sites(request: SynthesisRequest, material: Sequence[LabelledFrame]) -> list[EditSite]:
    """Every box of a confusable class in the material, in an order drawn from the request's seed."""
    if not request.confusable_classes:
        raise ValueError("editing needs request.confusable_classes: the classes whose boxes become the target class")
    sites = []
    for frame in material:
        for j, (box, cls) in enumerate(zip(frame.boxes, frame.class_ids, strict=True)):
            w, h = box[2] - box[0], box[3] - box[1]
            if int(cls) in request.confusable_classes and min(w, h) >= MIN_BOX_PX:
                sites.append(_site(frame, j))
    if not sites:
        raise ValueError(
            f"no box of classes {request.confusable_classes} at least {MIN_BOX_PX} px in the {len(material)} "
            "frames given"
        )
    order = np.random.default_rng(request.seed).permutation(len(sites))
    return [sites[i] for i in order]


def _site(frame: LabelledFrame, j: int) -> EditSite:
    img_h, img_w = frame.image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in frame.boxes[j])
    side = max(MIN_CROP_PX, CROP_SCALE * max(x2 - x1, y2 - y1))
    cw, ch = int(min(img_w, np.ceil(side))), int(min(img_h, np.ceil(side)))
    # Square where the frame allows, centred on the box, shifted (not cut) at the frame's edges.
    cx1 = int(np.clip(round((x1 + x2 - cw) / 2), 0, img_w - cw))
    cy1 = int(np.clip(round((y1 + y2 - ch) / 2), 0, img_h - ch))
    mx, my = BLEND_MARGIN * (x2 - x1), BLEND_MARGIN * (y2 - y1)
    region = (
        max(cx1, int(np.floor(x1 - mx))), max(cy1, int(np.floor(y1 - my))),
        min(cx1 + cw, int(np.ceil(x2 + mx))), min(cy1 + ch, int(np.ceil(y2 + my))),
    )  # fmt: skip
    return EditSite(frame=frame, box_index=j, crop=(cx1, cy1, cx1 + cw, cy1 + ch), region=region)


def sent_size(site: EditSite) -> tuple[int, int]:
    """(width, height) of the crop as sent: scaled so its longer side is SEND_PX."""
    x1, y1, x2, y2 = site.crop
    scale = SEND_PX / max(x2 - x1, y2 - y1)
    return max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))


def model_input(site: EditSite) -> np.ndarray:
    x1, y1, x2, y2 = site.crop
    size = sent_size(site)
    interpolation = cv2.INTER_CUBIC if size[0] > x2 - x1 else cv2.INTER_AREA
    return cv2.resize(site.frame.image[y1:y2, x1:x2], size, interpolation=interpolation)


def blend_alpha(site: EditSite) -> np.ndarray:
    """(region h, region w) weights of the edit: 1 on the box, easing to 0 across the margin, 0 on protected boxes."""
    rx1, ry1, rx2, ry2 = site.region
    x1, y1, x2, y2 = (float(v) for v in site.frame.boxes[site.box_index])
    xs, ys = np.arange(rx1, rx2) + 0.5, np.arange(ry1, ry2) + 0.5  # pixel centres
    dx = np.maximum(np.maximum(x1 - xs, xs - x2), 0) / max(BLEND_MARGIN * (x2 - x1), 1e-6)
    dy = np.maximum(np.maximum(y1 - ys, ys - y2), 0) / max(BLEND_MARGIN * (y2 - y1), 1e-6)
    t = np.clip(1.0 - np.maximum(dx[None, :], dy[:, None]), 0.0, 1.0)
    alpha = t * t * (3 - 2 * t)  # smoothstep: no visible step at either edge of the feather
    # Other labelled objects clear of the edited box keep their own pixels, so their labels hold too.
    for k, other in enumerate(site.frame.boxes):
        ox1, oy1, ox2, oy2 = (float(v) for v in other)
        if k == site.box_index or (ox1 < x2 and x1 < ox2 and oy1 < y2 and y1 < oy2):
            continue
        px1, py1 = max(int(np.floor(ox1)) - rx1, 0), max(int(np.floor(oy1)) - ry1, 0)
        px2, py2 = min(int(np.ceil(ox2)) - rx1, rx2 - rx1), min(int(np.ceil(oy2)) - ry1, ry2 - ry1)
        if px1 < px2 and py1 < py2:
            alpha[py1:py2, px1:px2] = 0.0
    return alpha


def blend_back(site: EditSite, edited_crop: np.ndarray) -> np.ndarray:
    """The frame with the edited crop (any size; scaled to the crop) blended in over the neighbourhood only."""
    cx1, cy1, cx2, cy2 = site.crop
    edited = cv2.resize(edited_crop, (cx2 - cx1, cy2 - cy1), interpolation=cv2.INTER_AREA)
    rx1, ry1, rx2, ry2 = site.region
    out = site.frame.image.copy()
    alpha = blend_alpha(site)[..., None]
    real = out[ry1:ry2, rx1:rx2].astype(np.float32)
    new = edited[ry1 - cy1 : ry2 - cy1, rx1 - cx1 : rx2 - cx1].astype(np.float32)
    out[ry1:ry2, rx1:rx2] = np.rint(alpha * new + (1.0 - alpha) * real).astype(np.uint8)
    return out
