"""imagen: Imagen on Vertex AI, `edit_image` inpainting at a verified box or `generate_images` labelled by a teacher.

Google retired the Imagen models in 2026 in favour of Gemini image models; a retired id fails with a message
naming the replacement (see client.py), and the model ids stay settings for projects that still have them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from google.genai import types

from feedback.synthesis.cloud.client import Answer, CloudCalls, ResponseCache, encode_png, images_answer, sha256
from feedback.synthesis.cloud.gemini import run_text
from feedback.synthesis.cloud.gemini_edit import run_edits
from feedback.synthesis.compose.edit_sites import EditSite, sent_size
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.teachers.port import Teacher

MASK_DILATION = 0.01  # Imagen grows the mask by this share of the image, so the new object's rim blends in


def box_mask(site: EditSite) -> np.ndarray:
    """White over the edited box, black elsewhere, in the coordinates of the (scaled) crop sent."""
    cx1, cy1, cx2, cy2 = site.crop
    width, height = sent_size(site)
    sy, sx = height / (cy2 - cy1), width / (cx2 - cx1)
    x1, y1, x2, y2 = (float(v) for v in site.frame.boxes[site.box_index])
    mask = np.zeros((height, width), np.uint8)
    top, left = int(np.floor((y1 - cy1) * sy)), int(np.floor((x1 - cx1) * sx))
    mask[max(top, 0) : int(np.ceil((y2 - cy1) * sy)), max(left, 0) : int(np.ceil((x2 - cx1) * sx))] = 255
    return mask


class ImagenGenerator:
    """Inpainting (labels by construction) when the request names an edit and confusable classes, else text-to-image."""

    name = "imagen"

    def __init__(
        self, calls: CloudCalls, teacher: Teacher | None = None, *,
        model: str = "imagen-4.0-generate-001", edit_model: str = "imagen-3.0-capability-001",
    ) -> None:  # fmt: skip
        self.calls, self.teacher, self.model, self.edit_model = calls, teacher, model, edit_model

    def generate(
        self, request: SynthesisRequest, material: Sequence[LabelledFrame]
    ) -> Iterator[SyntheticImage | Rejected]:
        if request.edit_instruction and request.confusable_classes:
            yield from run_edits(self.name, self.edit_model, "EDGELOOP_IMAGEN_EDIT_MODEL", self.calls, request,
                                 material, self._inpaint_call(request.edit_instruction))  # fmt: skip
            return
        yield from run_text(self.name, self.model, "EDGELOOP_IMAGEN_MODEL", self.calls, self.teacher, request, material,
                            self._generate_call(request.negative_prompt))  # fmt: skip

    def _generate_call(
        self, negative: str | None
    ) -> Callable[[str, int, str | None], tuple[str, Callable[[], Answer]]]:
        def call(prompt: str, seed: int, aspect: str | None) -> tuple[str, Callable[[], Answer]]:
            key = ResponseCache.key(model=self.model, method="generate_images", prompt=prompt, seed=seed, inputs=[],
                                    options={"aspect_ratio": aspect, "negative_prompt": negative})  # fmt: skip
            # A seed is honoured only without the SynthID watermark.
            config = types.GenerateImagesConfig(
                number_of_images=1, seed=seed, add_watermark=False, include_rai_reason=True,
                negative_prompt=negative, aspect_ratio=aspect,
            )  # fmt: skip
            return key, lambda: images_answer(
                self.calls.client.models.generate_images(model=self.model, prompt=prompt, config=config)
            )

        return call

    def _inpaint_call(self, instruction: str) -> Callable[[EditSite, bytes, int], tuple[str, Callable[[], Answer]]]:
        def call(site: EditSite, sent: bytes, seed: int) -> tuple[str, Callable[[], Answer]]:
            mask = encode_png(box_mask(site))
            key = ResponseCache.key(model=self.edit_model, method="edit_image", prompt=instruction, seed=seed,
                                    inputs=[sha256(sent), sha256(mask)],
                                    options={"mask_dilation": MASK_DILATION})  # fmt: skip
            references: list[types.ReferenceImage] = [
                types.RawReferenceImage(
                    reference_id=0, reference_image=types.Image(image_bytes=sent, mime_type="image/png")),
                types.MaskReferenceImage(
                    reference_id=1, reference_image=types.Image(image_bytes=mask, mime_type="image/png"),
                    config=types.MaskReferenceConfig(mask_mode="MASK_MODE_USER_PROVIDED", mask_dilation=MASK_DILATION),
                ),
            ]  # fmt: skip
            config = types.EditImageConfig(
                edit_mode="EDIT_MODE_INPAINT_INSERTION", number_of_images=1, seed=seed,
                add_watermark=False, include_rai_reason=True,
            )  # fmt: skip
            return key, lambda: images_answer(
                self.calls.client.models.edit_image(
                    model=self.edit_model, prompt=instruction, reference_images=references, config=config
                )
            )

        return call
