"""qwen-image and qwen-image-edit: Qwen-Image text-to-image labelled by a teacher; Qwen-Image-Edit on verified crops.

Text-to-image output carries no boxes: the teacher (GroundingDINO + SAM, or the champion) labels it and it is kept
only where the target class is found. Edits reuse gemini-edit's crop-edit-blend, so their boxes hold by construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedback.synthesis.compose.edit_sites import blend_back, edit_sites
from feedback.synthesis.diffusion.diffusers_common import (
    batched, bgr, class_phrase, image_seeds, model_id, pil_rgb, torch_generators,
)
from feedback.synthesis.diffusion.diffusers_run import DiffusersRun
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.teachers.port import Teacher, label_by_teacher

# Qwen-Image's transformer overflows in float16 (its activations exceed 65504); bfloat16 is what it was released in.
HALF = "bfloat16"
EMPTY_NEGATIVE = " "  # Qwen's own examples: true CFG needs a negative prompt, and a blank one is its neutral


def _negative(true_cfg_scale: float, prompts: list[str]) -> dict[str, list[str]]:
    """The negative prompts, only where true CFG uses them (the pipeline warns about unused ones)."""
    return {"negative_prompt": prompts} if true_cfg_scale > 1 else {}


@dataclass(kw_only=True)
class QwenRun(DiffusersRun):
    """Qwen-Image's own run: 50 steps and true classifier-free guidance, for both of its pipelines."""

    steps: int = 50
    true_cfg_scale: float = 4.0


@dataclass
class QwenImageGenerator(QwenRun):
    """`QwenImagePipeline`; `size` None: the pipeline's own resolution (1024 px square)."""

    pipe: Any
    teacher: Teacher
    classes: Sequence[str]
    phrases: Mapping[str, Sequence[str]] = field(default_factory=dict)
    name: str = "qwen-image"

    @classmethod
    def from_settings(cls, settings: Any, classes: Sequence[str], teacher: Teacher, *,
                      allow_cpu: bool | None = None) -> QwenImageGenerator:
        pipe, run = cls.load(settings, "QwenImagePipeline", settings.qwen_image_model, allow_cpu, half=HALF)
        return cls(pipe, teacher, tuple(classes), settings.class_phrases, **run)

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        prompt = request.prompt or f"a photo of {class_phrase(self.classes, self.phrases, request.target_class)}"
        negative = request.negative_prompt or EMPTY_NEGATIVE
        size = {"height": self.size, "width": self.size} if self.size else {}
        model = model_id(self.pipe)
        for seeds in batched(image_seeds(request.seed, request.count), self.batch_size):
            out = self.pipe(prompt=[prompt] * len(seeds), **_negative(self.true_cfg_scale, [negative] * len(seeds)),
                            true_cfg_scale=self.true_cfg_scale, num_inference_steps=self.steps,
                            generator=torch_generators(seeds), output_type="np", **size)
            for seed, image in zip(seeds, out.images, strict=True):
                lineage = {"generator": self.name, "model": model, "seed": seed, "cluster_id": request.cluster_id,
                           "prompt": prompt, "negative_prompt": request.negative_prompt, "steps": self.steps,
                           "true_cfg_scale": self.true_cfg_scale}
                yield label_by_teacher(self.teacher, bgr(image), request, lineage)


@dataclass
class QwenImageEditGenerator(QwenRun):
    """`QwenImageEditPipeline` editing the crop around a verified confusable box with the cluster's instruction.

    The pipeline works at about one megapixel whatever the crop's size; `size` None keeps its own output size.
    """

    pipe: Any
    name: str = "qwen-image-edit"

    @classmethod
    def from_settings(cls, settings: Any, *, allow_cpu: bool | None = None) -> QwenImageEditGenerator:
        pipe, run = cls.load(settings, "QwenImageEditPipeline", settings.qwen_image_edit_model, allow_cpu, half=HALF)
        return cls(pipe, **run)

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        instruction = request.edit_instruction
        if not instruction:
            raise ValueError("qwen-image-edit needs request.edit_instruction (what to change in the box)")
        sites = edit_sites(request, material)
        size = {"height": self.size, "width": self.size} if self.size else {}
        model = model_id(self.pipe)
        jobs = [(seed, sites[i % len(sites)]) for i, seed in enumerate(image_seeds(request.seed, request.count))]
        for batch in batched(jobs, self.batch_size):
            crops = [pil_rgb(site.frame.image[site.crop[1] : site.crop[3], site.crop[0] : site.crop[2]])
                     for _, site in batch]
            out = self.pipe(image=crops, prompt=[instruction] * len(batch),
                            **_negative(self.true_cfg_scale, [EMPTY_NEGATIVE] * len(batch)),
                            true_cfg_scale=self.true_cfg_scale, num_inference_steps=self.steps,
                            generator=torch_generators([s for s, _ in batch]), output_type="np", **size)
            for (seed, site), edited in zip(batch, out.images, strict=True):
                j = site.box_index
                class_ids = np.asarray(site.frame.class_ids, int).copy()
                class_ids[j] = request.target_class
                lineage = {
                    "generator": self.name, "model": model, "seed": seed, "cluster_id": request.cluster_id,
                    "edit_instruction": instruction, "source_image_sha256": site.frame.image_sha256,
                    "edited_box_index": j, "edited_box": [float(v) for v in site.frame.boxes[j]],
                    "from_class": int(site.frame.class_ids[j]), "to_class": request.target_class,
                    "crop": list(site.crop), "neighbourhood": list(site.region), "steps": self.steps,
                    "new_boxes": [j], "changed_regions": [list(site.region)],
                }  # fmt: skip
                yield SyntheticImage(image=blend_back(site, bgr(edited)),
                                     boxes=np.asarray(site.frame.boxes, float).copy(), class_ids=class_ids,
                                     lineage=lineage)
