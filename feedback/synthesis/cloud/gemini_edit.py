"""gemini-edit: a Gemini image model edits a crop around one verified box; only the box's neighbourhood goes back.

Where it edits and how the result is blended back is `edit_sites`'s (shared with the other edit generators).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from google.genai import types

from feedback.synthesis.cloud.client import (
    Answer, Budget, CloudCalls, OverBudget, ResponseCache, content_answer, decode_bgr, encode_png, image_seed, sha256,
)
from feedback.synthesis.compose.edit_sites import EditSite, blend_back, edit_sites, model_input
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage

ASPECT_RATIOS = {"1:1": 1.0, "4:5": 0.8, "5:4": 1.25, "3:4": 0.75, "4:3": 4 / 3, "2:3": 2 / 3, "3:2": 1.5,
                 "9:16": 9 / 16, "16:9": 16 / 9, "21:9": 21 / 9}  # fmt: skip


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The image models' supported ratio closest to width:height (compared on a log scale)."""
    return min(ASPECT_RATIOS, key=lambda r: abs(np.log(ASPECT_RATIOS[r] * height / width)))


T = TypeVar("T")

# (site, model input as PNG, seed) -> (cache key, the paid call)
EditCall = Callable[[EditSite, bytes, int], tuple[str, Callable[[], Answer]]]


# (cache key, the paid call, its lineage so far, what the caller needs to make the image's labels)
Attempt = tuple[str, Callable[[], Answer], dict[str, Any], T]


def paid_images(
    model: str, model_setting: str, calls: CloudCalls, budget: Budget, attempts: Iterable[Attempt[T]]
) -> Iterator[tuple[np.ndarray, dict[str, Any], T] | Rejected]:
    """Each attempt paid for (or taken from the cache) in turn, the loop every cloud generator shares: its first
    image with its lineage (cost, cache hit) and context, or a Rejected for a refusal. Over budget, one last
    Rejected and no further attempt is even made, so nothing past the cap is paid for."""
    for key, call, lineage, context in attempts:
        try:
            fetched = calls.fetch(model, key, call, budget, model_setting=model_setting)
        except OverBudget as e:
            yield Rejected(str(e), lineage | {"spent_usd": e.spent_usd})
            return
        lineage |= {"cost_usd": fetched.cost_usd, "cached": fetched.cached}
        if fetched.answer.refusal is not None:
            yield Rejected(fetched.answer.refusal, lineage)
        else:
            yield decode_bgr(fetched.answer.images[0]), lineage, context


def image_content_call(
    calls: CloudCalls, model: str, prompt: str, seed: int, aspect: str | None, image_png: bytes | None = None
) -> tuple[str, Callable[[], Answer]]:
    """One image from a Gemini image model (`generate_content`), with or without an image to edit: its cache
    key (the prompt, seed, input and ratio) and the paid call, the same for gemini and gemini-edit."""
    key = ResponseCache.key(model=model, method="generateContent", prompt=prompt, seed=seed,
                            inputs=[sha256(image_png)] if image_png else [], options={"aspect_ratio": aspect})
    config = types.GenerateContentConfig(
        response_modalities=["IMAGE"], candidate_count=1, seed=seed,
        image_config=types.ImageConfig(aspect_ratio=aspect) if aspect else None,
    )  # fmt: skip
    picture = [types.Part.from_bytes(data=image_png, mime_type="image/png")] if image_png else []
    return key, lambda: content_answer(
        calls.client.models.generate_content(model=model, contents=[*picture, prompt], config=config)
    )


def run_edits(
    name: str, model: str, model_setting: str, calls: CloudCalls,
    request: SynthesisRequest, material: Sequence[LabelledFrame], edit_call: EditCall,
) -> Iterator[SyntheticImage | Rejected]:  # fmt: skip
    """The edit loop gemini-edit and imagen's inpainting share: one box per image, labels by construction."""
    sites = edit_sites(request, material)

    def attempts() -> Iterator[Attempt[EditSite]]:
        for i in range(request.count):
            site, seed = sites[i % len(sites)], image_seed(request.seed, i)
            sent = encode_png(model_input(site))
            key, call = edit_call(site, sent, seed)
            j = site.box_index
            yield key, call, {
                "generator": name, "model": model, "seed": seed, "cluster_id": request.cluster_id,
                "edit_instruction": request.edit_instruction, "source_image_sha256": site.frame.image_sha256,
                "edited_box_index": j, "edited_box": [float(v) for v in site.frame.boxes[j]],
                "from_class": int(site.frame.class_ids[j]), "to_class": request.target_class,
                "crop": list(site.crop), "neighbourhood": list(site.region), "input_sha256": sha256(sent),
                "request_key": key,
            }, site  # fmt: skip

    for out in paid_images(model, model_setting, calls, Budget(request.max_cost_usd), attempts()):
        if isinstance(out, Rejected):
            yield out
            continue
        edited, lineage, site = out
        class_ids = np.asarray(site.frame.class_ids, dtype=int).copy()
        class_ids[site.box_index] = request.target_class
        yield SyntheticImage(image=blend_back(site, edited), boxes=np.asarray(site.frame.boxes, float).copy(),
                             class_ids=class_ids, lineage=lineage)


class GeminiEditGenerator:
    """`generate_content` with an image model, one verified confusable box per image, edited by the instruction."""

    name = "gemini-edit"
    model_setting = "EDGELOOP_GEMINI_IMAGE_MODEL"

    def __init__(self, calls: CloudCalls, model: str = "gemini-2.5-flash-image") -> None:
        self.calls, self.model = calls, model

    def generate(
        self, request: SynthesisRequest, material: Sequence[LabelledFrame]
    ) -> Iterator[SyntheticImage | Rejected]:
        instruction = request.edit_instruction
        if not instruction:
            raise ValueError("gemini-edit needs request.edit_instruction (what to change in the box)")

        def edit_call(site: EditSite, sent: bytes, seed: int) -> tuple[str, Callable[[], Answer]]:
            x1, y1, x2, y2 = site.crop
            aspect = nearest_aspect_ratio(x2 - x1, y2 - y1)
            return image_content_call(self.calls, self.model, instruction, seed, aspect, sent)

        yield from run_edits(self.name, self.model, self.model_setting, self.calls, request, material, edit_call)
