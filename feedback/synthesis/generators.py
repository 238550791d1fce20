"""Generator names the CLI and flows accept, each a factory taking the workspace (for settings and caches).

Cloud adapters register here under "gemini-edit", "gemini" and "imagen"; their SDKs load only when chosen.
"""

from __future__ import annotations

from collections.abc import Callable

from feedback.synthesis.paste import PasteGenerator
from feedback.synthesis.port import Generator
from feedback.synthesis.swap import SwapGenerator
from store.settings import Workspace


def _cloud(name: str, ws: Workspace) -> Generator:
    from feedback.synthesis.cloud import cloud_generator  # google-genai loads only when a cloud generator is chosen

    return cloud_generator(name, ws)


def _local(name: str, ws: Workspace) -> Generator:
    from feedback.synthesis.diffusers_common import local_generator  # diffusers loads only when one is chosen

    return local_generator(name, ws)


GENERATORS: dict[str, Callable[[Workspace], Generator]] = {
    "swap": lambda ws: SwapGenerator(),
    "paste": lambda ws: PasteGenerator(),
    "gemini-edit": lambda ws: _cloud("gemini-edit", ws),
    "gemini": lambda ws: _cloud("gemini", ws),
    "imagen": lambda ws: _cloud("imagen", ws),
    # Local diffusers pipelines (the gpu-gen extra): a GPU, or settings' diffusion_allow_cpu.
    "gligen": lambda ws: _local("gligen", ws),
    "sd-inpaint": lambda ws: _local("sd-inpaint", ws),
    "qwen-image": lambda ws: _local("qwen-image", ws),
    "qwen-image-edit": lambda ws: _local("qwen-image-edit", ws),
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
