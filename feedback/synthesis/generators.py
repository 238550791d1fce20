"""Generator names the CLI and flows accept, each a factory taking the workspace (for settings and caches).

The cloud and local factories live here beside the registry, so no adapter imports back the module that builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from feedback.synthesis.compose.paste import PasteGenerator
from feedback.synthesis.compose.swap import SwapGenerator
from feedback.synthesis.diffusion.diffusers_common import pick_device
from feedback.synthesis.diffusion.gligen import GligenGenerator
from feedback.synthesis.diffusion.qwen_image import QwenImageEditGenerator, QwenImageGenerator
from feedback.synthesis.diffusion.sd_inpaint import SdInpaintGenerator
from feedback.synthesis.port import Generator
from feedback.teachers.grounding_dino import GroundingDinoTeacher
from feedback.teachers.port import champion_teacher
from store.labels import catalog_classes
from store.settings import Workspace

CLOUD_GENERATORS = ("gemini-edit", "gemini", "imagen")
# Local diffusers pipelines (the gpu-gen extra): a GPU, or settings' diffusion_allow_cpu.
LOCAL_GENERATORS = ("gligen", "sd-inpaint", "qwen-image", "qwen-image-edit")


def cloud_generator(name: str, ws: Workspace) -> Generator:
    """`gemini-edit`, `gemini` or `imagen` from the workspace's settings; text-to-image labels with the champion."""
    # The cloud adapters import google-genai at their top: it loads only when a cloud generator is chosen.
    from feedback.synthesis.cloud.client import CloudCalls
    from feedback.synthesis.cloud.gemini import GeminiImageGenerator
    from feedback.synthesis.cloud.gemini_edit import GeminiEditGenerator
    from feedback.synthesis.cloud.imagen import ImagenGenerator

    if name not in CLOUD_GENERATORS:
        raise ValueError(f"no cloud generator {name!r}; choose gemini-edit, gemini or imagen")
    s = ws.settings
    calls = CloudCalls.from_settings(s)
    if name == "gemini-edit":
        return GeminiEditGenerator(calls, s.gemini_image_model)
    teacher = champion_teacher(ws)
    if name == "gemini":
        return GeminiImageGenerator(calls, teacher, s.gemini_image_model)
    return ImagenGenerator(calls, teacher, model=s.imagen_model, edit_model=s.imagen_edit_model)


def local_generator(name: str, ws: Workspace) -> Generator:
    """`gligen`, `sd-inpaint`, `qwen-image` or `qwen-image-edit` built from the workspace's settings and classes.

    qwen-image's output is labelled by the open-vocabulary teacher (GroundingDINO, SAM when configured).
    """
    if name not in LOCAL_GENERATORS:
        raise ValueError(f"no local generator {name!r}; choose one of {', '.join(LOCAL_GENERATORS)}")
    settings = ws.settings
    if name == "qwen-image-edit":
        return QwenImageEditGenerator.from_settings(settings)
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
    if not classes:
        raise ValueError(f"{name} names classes in its prompts, and the catalog has no class list yet: import a "
                         "labelled data set first (`edgeloop import`)")
    if name == "gligen":
        return GligenGenerator.from_settings(settings, classes)
    if name == "sd-inpaint":
        return SdInpaintGenerator.from_settings(settings, classes)
    # The image model's GPU check comes first: a CPU-only site is told before GroundingDINO is loaded.
    pick_device(settings.diffusion_allow_cpu, half="bfloat16")
    return QwenImageGenerator.from_settings(settings, classes, GroundingDinoTeacher.from_settings(settings, classes))


GENERATORS: dict[str, Callable[[Workspace], Generator]] = {
    "swap": lambda ws: SwapGenerator(),
    "paste": lambda ws: PasteGenerator(),
    **{name: partial(cloud_generator, name) for name in CLOUD_GENERATORS},
    **{name: partial(local_generator, name) for name in LOCAL_GENERATORS},
}
# Names the CLI offers before their adapters are registered, so a missing one is a clear error.
PLANNED: tuple[str, ...] = ()
DEFAULT = "swap"


def generator_names() -> list[str]:
    return list(dict.fromkeys([*GENERATORS, *PLANNED]))


def make_generator(name: str, ws: Workspace) -> Generator:
    """The generator called `name`, built for `ws`; ValueError naming the choices when unknown."""
    factory = GENERATORS.get(name)
    if factory is None:
        if name in PLANNED:
            raise ValueError(f"generator {name!r} is not available in this installation (registered: "
                             f"{', '.join(GENERATORS)})")
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(generator_names())}")
    return factory(ws)
