"""gligen: Stable Diffusion with grounded boxes (GLIGEN) draws the target class exactly where a layout says.

The layout comes from the failure cluster's statistics (size, place, shape, crowding), so the boxes are labels by
construction; each batch shares one layout (the pipeline grounds one set of boxes per call).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedback.synthesis.compose.look import look_from_attributes
from feedback.synthesis.diffusion.diffusers_common import (
    batched, bgr, class_phrase, image_seeds, model_id, torch_generators,
)
from feedback.synthesis.diffusion.diffusers_run import DiffusersRun
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage

DEFAULT_REL_SIZE = 0.2  # sqrt(box area / image area) when the cluster says nothing: a clearly visible object
ASPECTS = {"tall": 0.55, "square": 1.0, "wide": 1.8}  # width / height per mining's shape word
MAX_OVERLAP = 0.1  # IoU above which a drawn box is redrawn: GLIGEN merges overlapping grounded objects


def cluster_stats(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Flat statistics from a flat dict and/or mining's cluster description ({"bins": ..., "medians": ...}),
    given as the attributes themselves or under their "description" key (as `clusters.attributes_of` does)."""
    description = attributes.get("description") if isinstance(attributes.get("description"), Mapping) else attributes
    flat: dict[str, Any] = {}
    for word, summary in (description.get("bins") or {}).items():
        if isinstance(summary, Mapping):
            flat[word] = summary.get("value")
    flat |= {k: v for k, v in (description.get("medians") or {}).items() if v is not None}
    flat |= {k: v for k, v in attributes.items() if k not in ("bins", "medians", "description")}
    return flat


def _number(value: Any) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def object_count(stats: Mapping[str, Any], max_objects: int) -> int:
    """`count` if given, else the object plus its median neighbours (crowded: 3), at most `max_objects`."""
    count = _number(stats.get("count"))
    if count is None:
        neighbours = _number(stats.get("neighbours"))
        count = 1 + (neighbours if neighbours is not None else 2 if stats.get("crowding") == "crowded" else 0)
    return int(np.clip(round(count), 1, max_objects))


def draw_layout(stats: Mapping[str, Any], rng: np.random.Generator, count: int,
                avoid: np.ndarray | None = None) -> np.ndarray:
    """Up to `count` boxes, (N, 4) xyxy in 0..1 of the image, sized, shaped and placed as the cluster's objects.

    Boxes overlapping each other (or `avoid`, normalised too) by more than MAX_OVERLAP are redrawn, at most 50
    times each; a box that finds no room is left out.
    """
    import supervision as sv  # here, not at the top: the generator registry imports this module for `edgeloop`

    look = look_from_attributes(dict(stats))
    rel = look.rel_size or DEFAULT_REL_SIZE
    aspect = _number(stats.get("aspect")) or ASPECTS.get(str(stats.get("shape")), 1.0)
    taken = [np.asarray(b, float) for b in (avoid if avoid is not None else np.zeros((0, 4)))]
    boxes: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(50):
            size = float(np.clip(rel * np.exp(rng.normal(0.0, look.rel_size_spread)), 0.02, 0.9))
            w = float(np.clip(size * np.sqrt(aspect), 0.01, 0.95))
            h = float(np.clip(size / np.sqrt(aspect), 0.01, 0.95))
            cx, cy = _centre(look.position, w, h, rng)
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            if not taken or sv.box_iou_batch(box[None], np.asarray(taken)).max() <= MAX_OVERLAP:
                boxes.append(box)
                taken.append(box)
                break
    return np.asarray(boxes, float).reshape(-1, 4)


def _centre(position: str, w: float, h: float, rng: np.random.Generator) -> tuple[float, float]:
    lo_x, hi_x, lo_y, hi_y = w / 2, 1 - w / 2, h / 2, 1 - h / 2
    if position == "centre":  # mining's centre: within 0.35 of the middle (Chebyshev, in half-frames)
        lo_x, hi_x = max(lo_x, 0.325), min(hi_x, 0.675)
        lo_y, hi_y = max(lo_y, 0.325), min(hi_y, 0.675)
    elif position == "edge":  # touching or near one side
        side = int(rng.integers(4))
        cx, cy = rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y))
        cx = lo_x if side == 0 else hi_x if side == 1 else cx
        cy = lo_y if side == 2 else hi_y if side == 3 else cy
        return float(cx), float(cy)
    return float(rng.uniform(lo_x, max(lo_x, hi_x))), float(rng.uniform(lo_y, max(lo_y, hi_y)))


@dataclass
class GligenGenerator(DiffusersRun):
    """`StableDiffusionGLIGENPipeline` grounding the target class's phrase in boxes drawn from the cluster.

    `size` None: the pipeline's own resolution (512 for GLIGEN 1.4). Deterministic by (seed, batch size).
    """

    pipe: Any
    classes: Sequence[str]
    phrases: Mapping[str, Sequence[str]] = field(default_factory=dict)
    guidance_scale: float = field(default=7.5, kw_only=True)
    max_objects: int = 4
    beta: float = 0.3  # share of the steps that are grounded (GLIGEN's scheduled sampling)
    name: str = "gligen"

    @classmethod
    def from_settings(cls, settings: Any, classes: Sequence[str], *, allow_cpu: bool | None = None) -> GligenGenerator:
        pipe, run = cls.load(settings, "StableDiffusionGLIGENPipeline", settings.gligen_model, allow_cpu)
        return cls(pipe, tuple(classes), settings.class_phrases, **run)

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        phrase = class_phrase(self.classes, self.phrases, request.target_class)
        prompt = request.prompt or f"a photo of {phrase}"
        stats = cluster_stats(request.attributes)
        count = object_count(stats, self.max_objects)
        rng = np.random.default_rng(request.seed)
        size = self.size or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        model = model_id(self.pipe)
        for batch, seeds in enumerate(batched(image_seeds(request.seed, request.count), self.batch_size)):
            layout = draw_layout(stats, rng, count)
            out = self.pipe(
                prompt=prompt, negative_prompt=request.negative_prompt, gligen_phrases=[phrase] * len(layout),
                gligen_boxes=layout.tolist(), gligen_scheduled_sampling_beta=self.beta,
                num_images_per_prompt=len(seeds), generator=torch_generators(seeds), num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale, height=size, width=size, output_type="np",
            )
            flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(seeds)
            for seed, image, unsafe in zip(seeds, out.images, flagged, strict=True):
                lineage = {
                    "generator": self.name, "model": model, "seed": seed, "batch": batch,
                    "cluster_id": request.cluster_id,
                    "prompt": prompt, "negative_prompt": request.negative_prompt, "phrases": [phrase] * len(layout),
                    "layout": np.round(layout, 5).tolist(), "steps": self.steps, "guidance_scale": self.guidance_scale,
                }  # fmt: skip
                if unsafe:
                    yield Rejected("the pipeline's safety checker withheld the image", lineage)
                    continue
                boxes = layout * np.array([size, size, size, size], float)
                yield SyntheticImage(image=bgr(image), boxes=boxes, class_ids=np.full(len(boxes), request.target_class),
                                     lineage=lineage)
