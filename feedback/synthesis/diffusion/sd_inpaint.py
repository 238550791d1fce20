"""sd-inpaint: a Stable Diffusion inpainting pipeline paints the target class into a box mask of a verified real frame.

The box is the label by construction; the output is composited back through the mask, so every pixel outside it is
the real frame's. With confusable classes a verified box of theirs is repainted (helmet -> bare head), else a new box
is placed where the cluster's objects sit, clear of the frame's labelled ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from feedback.synthesis.compose.swap import MaterialError  # what the CLI reports as "nothing to work from"
from feedback.synthesis.diffusion.diffusers_common import (
    batched, bgr, class_phrase, image_seeds, model_id, pil_rgb, torch_generators,
)
from feedback.synthesis.diffusion.diffusers_run import DiffusersRun
from feedback.synthesis.diffusion.gligen import cluster_stats, draw_layout
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage

CROP_SCALE = 3.0  # the crop's side in box sides: the model sees the object's surroundings, as gemini-edit's does
MIN_CROP_PX = 64
MIN_BOX_PX = 8


@dataclass(frozen=True)
class Site:
    """Where one image is painted: a frame, the box (the label), its pixel mask rect and the crop around it."""

    frame: LabelledFrame
    box: tuple[float, float, float, float]
    mask: tuple[int, int, int, int]  # x1, y1, x2, y2 whole pixels, end exclusive
    crop: tuple[int, int, int, int]
    replaced: int | None  # index of the verified box repainted; None: a new box


def site_at(frame: LabelledFrame, box: Sequence[float], replaced: int | None) -> Site:
    img_h, img_w = frame.image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mask = (max(0, int(np.floor(x1))), max(0, int(np.floor(y1))),
            min(img_w, int(np.ceil(x2))), min(img_h, int(np.ceil(y2))))  # fmt: skip
    side = max(MIN_CROP_PX, CROP_SCALE * max(x2 - x1, y2 - y1))
    cw, ch = int(min(img_w, np.ceil(side))), int(min(img_h, np.ceil(side)))
    # Square where the frame allows, centred on the box, shifted (not cut) at the frame's edges.
    cx1 = int(np.clip(round((x1 + x2 - cw) / 2), 0, img_w - cw))
    cy1 = int(np.clip(round((y1 + y2 - ch) / 2), 0, img_h - ch))
    return Site(frame, (x1, y1, x2, y2), mask, (cx1, cy1, cx1 + cw, cy1 + ch), replaced)


def replace_sites(request: SynthesisRequest, material: Sequence[LabelledFrame]) -> list[Site]:
    """Every verified box of a confusable class at least MIN_BOX_PX a side, in an order drawn from the seed."""
    sites = [site_at(frame, box, j) for frame in material
             for j, (box, cls) in enumerate(zip(frame.boxes, frame.class_ids, strict=True))
             if int(cls) in request.confusable_classes and min(box[2] - box[0], box[3] - box[1]) >= MIN_BOX_PX]
    if not sites:
        raise MaterialError(f"no box of classes {list(request.confusable_classes)} at least {MIN_BOX_PX} px in "
                                   f"the {len(material)} verified frames given")
    order = np.random.default_rng(request.seed).permutation(len(sites))
    return [sites[i] for i in order]


def insert_site(frame: LabelledFrame, stats: Mapping[str, Any], rng: np.random.Generator) -> Site | None:
    """A new box in `frame`, sized and placed as the cluster's objects, clear of its labelled boxes (None: no room)."""
    h, w = frame.image.shape[:2]
    scale = np.array([w, h, w, h], float)
    avoid = np.asarray(frame.boxes, float).reshape(-1, 4) / scale
    drawn = draw_layout(stats, rng, 1, avoid=avoid)
    return site_at(frame, drawn[0] * scale, None) if len(drawn) else None


def composite(site: Site, painted_crop: np.ndarray) -> np.ndarray:
    """The frame with the painted crop (any size; scaled to the crop) copied in under the mask rect only."""
    cx1, cy1, cx2, cy2 = site.crop
    interpolation = cv2.INTER_AREA if painted_crop.shape[1] > cx2 - cx1 else cv2.INTER_CUBIC
    painted = cv2.resize(painted_crop, (cx2 - cx1, cy2 - cy1), interpolation=interpolation)
    mx1, my1, mx2, my2 = site.mask
    out = site.frame.image.copy()
    out[my1:my2, mx1:mx2] = painted[my1 - cy1 : my2 - cy1, mx1 - cx1 : mx2 - cx1]
    return out


@dataclass
class SdInpaintGenerator(DiffusersRun):
    """`StableDiffusionInpaintPipeline` on crops around box masks of verified frames; `size` None: 512."""

    pipe: Any
    classes: Sequence[str]
    phrases: Mapping[str, Sequence[str]] = field(default_factory=dict)
    guidance_scale: float = field(default=7.5, kw_only=True)
    name: str = "sd-inpaint"

    @classmethod
    def from_settings(cls, settings: Any, classes: Sequence[str], *,
                      allow_cpu: bool | None = None) -> SdInpaintGenerator:
        pipe, run = cls.load(settings, "StableDiffusionInpaintPipeline", settings.sd_inpaint_model, allow_cpu)
        return cls(pipe, tuple(classes), settings.class_phrases, **run)

    def _sites(self, request: SynthesisRequest, material: Sequence[LabelledFrame]) -> list[Site | None]:
        if not material:
            raise MaterialError("sd-inpaint paints into verified real frames, and none were given")
        if request.confusable_classes:
            sites = replace_sites(request, material)
            return [sites[i % len(sites)] for i in range(request.count)]
        rng = np.random.default_rng(request.seed)
        stats = cluster_stats(request.attributes)
        return [insert_site(material[int(rng.integers(len(material)))], stats, rng) for _ in range(request.count)]

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        phrase = class_phrase(self.classes, self.phrases, request.target_class)
        prompt = request.prompt or f"a photo of {phrase}"
        size = self.size or 512
        model = model_id(self.pipe)
        jobs = list(zip(image_seeds(request.seed, request.count), self._sites(request, material), strict=True))
        for batch in batched(jobs, self.batch_size):
            lineages = {seed: self._lineage(request, site, seed, prompt, model) for seed, site in batch}
            ready = [(seed, site) for seed, site in batch if site is not None]
            for seed, site in batch:
                if site is None:
                    yield Rejected("no room for a new box clear of the frame's labelled objects", lineages[seed])
            if not ready:
                continue
            images, masks = [], []
            for _, site in ready:
                cx1, cy1, cx2, cy2 = site.crop
                crop = cv2.resize(site.frame.image[cy1:cy2, cx1:cx2], (size, size), interpolation=cv2.INTER_CUBIC)
                mask = np.zeros((cy2 - cy1, cx2 - cx1), np.uint8)
                mx1, my1, mx2, my2 = site.mask
                mask[my1 - cy1 : my2 - cy1, mx1 - cx1 : mx2 - cx1] = 255
                images.append(pil_rgb(crop))
                masks.append(Image.fromarray(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)))
            out = self.pipe(
                prompt=[prompt] * len(ready), negative_prompt=[request.negative_prompt] * len(ready)
                if request.negative_prompt else None, image=images, mask_image=masks, height=size, width=size,
                num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                generator=torch_generators([s for s, _ in ready]), output_type="np",
            )  # fmt: skip
            flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(ready)
            for (seed, site), painted, unsafe in zip(ready, out.images, flagged, strict=True):
                if unsafe:
                    yield Rejected("the pipeline's safety checker withheld the image", lineages[seed])
                    continue
                yield self._labelled(request, site, composite(site, bgr(painted)), lineages[seed])

    def _labelled(self, request: SynthesisRequest, site: Site, image: np.ndarray,
                  lineage: dict[str, Any]) -> SyntheticImage:
        boxes = np.asarray(site.frame.boxes, float).reshape(-1, 4).copy()
        class_ids = np.asarray(site.frame.class_ids, int).copy()
        if site.replaced is not None:
            class_ids[site.replaced] = request.target_class
        else:
            boxes = np.vstack([boxes, np.asarray(site.box, float)[None]])
            class_ids = np.append(class_ids, request.target_class)
        return SyntheticImage(image=image, boxes=boxes, class_ids=class_ids, lineage=lineage)

    def _lineage(self, request: SynthesisRequest, site: Site | None, seed: int, prompt: str,
                 model: str | None) -> dict[str, Any]:
        lineage: dict[str, Any] = {"generator": self.name, "model": model, "seed": seed,
                                   "cluster_id": request.cluster_id, "prompt": prompt,
                                   "negative_prompt": request.negative_prompt, "steps": self.steps,
                                   "guidance_scale": self.guidance_scale}
        if site is None:
            return lineage
        return lineage | {
            "source_image_sha256": site.frame.image_sha256, "mode": "insert" if site.replaced is None else "replace",
            "box": [round(v, 3) for v in site.box], "mask": list(site.mask), "crop": list(site.crop),
            "replaced_box_index": site.replaced, "to_class": request.target_class,
            # The filters' conventions: which boxes are the generator's, and which pixels it changed.
            "new_boxes": [len(site.frame.boxes) if site.replaced is None else site.replaced],
            "changed_regions": [list(site.mask)],
            "from_class": None if site.replaced is None else int(site.frame.class_ids[site.replaced]),
        }  # fmt: skip
