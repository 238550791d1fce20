"""gemini: text-to-image with a Gemini image model (`generate_content`, image output), labelled by a teacher.

The images carry no boxes of their own: each is kept only where the teacher finds the target class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from feedback.synthesis.cloud.client import Answer, Budget, CloudCalls, image_seed
from feedback.synthesis.cloud.gemini_edit import Attempt, image_content_call, nearest_aspect_ratio, paid_images
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.teachers.port import Teacher, label_by_teacher

# (prompt, seed, aspect ratio or None) -> (cache key, the paid call)
TextCall = Callable[[str, int, str | None], tuple[str, Callable[[], Answer]]]


def camera_aspect_ratio(material: Sequence[LabelledFrame]) -> str | None:
    """The supported ratio nearest the real frames', so generated scenes look framed like the cameras'."""
    if not material:
        return None
    h, w = material[0].image.shape[:2]
    return nearest_aspect_ratio(w, h)


def run_text(
    name: str, model: str, model_setting: str, calls: CloudCalls, teacher: Teacher | None,
    request: SynthesisRequest, material: Sequence[LabelledFrame], text_call: TextCall,
) -> Iterator[SyntheticImage | Rejected]:  # fmt: skip
    """The text-to-image loop gemini and imagen share: one image per call, seed after seed, the teacher labels."""
    if not request.prompt:
        raise ValueError(f"{name} needs request.prompt (the scene to draw)")
    if teacher is None:  # refused before anything is paid for
        raise ValueError(
            f"{name} text-to-image needs a teacher to label its images: the workspace has no champion "
            "yet (`edgeloop gate` promotes one)"
        )
    aspect = camera_aspect_ratio(material)

    def attempts() -> Iterator[Attempt[None]]:
        for i in range(request.count):
            seed = image_seed(request.seed, i)
            key, call = text_call(request.prompt, seed, aspect)
            yield key, call, {
                "generator": name, "model": model, "seed": seed, "cluster_id": request.cluster_id,
                "prompt": request.prompt, "negative_prompt": request.negative_prompt, "aspect_ratio": aspect,
                "request_key": key,
            }, None  # fmt: skip

    for out in paid_images(model, model_setting, calls, Budget(request.max_cost_usd), attempts()):
        yield out if isinstance(out, Rejected) else label_by_teacher(teacher, out[0], request, out[1])


class GeminiImageGenerator:
    """Scenes drawn from the cluster's prompt; Gemini has no negative prompt, so it is appended as words."""

    name = "gemini"
    model_setting = "EDGELOOP_GEMINI_IMAGE_MODEL"

    def __init__(self, calls: CloudCalls, teacher: Teacher | None, model: str = "gemini-2.5-flash-image") -> None:
        self.calls, self.teacher, self.model = calls, teacher, model

    def generate(
        self, request: SynthesisRequest, material: Sequence[LabelledFrame]
    ) -> Iterator[SyntheticImage | Rejected]:
        text = (request.prompt or "") + (f"\nDo not show: {request.negative_prompt}" if request.negative_prompt else "")

        def text_call(prompt: str, seed: int, aspect: str | None) -> tuple[str, Callable[[], Answer]]:
            return image_content_call(self.calls, self.model, text, seed, aspect)

        yield from run_text(
            self.name, self.model, self.model_setting, self.calls, self.teacher, request, material, text_call
        )
