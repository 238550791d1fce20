"""What the local (diffusers) generators share: where a pipeline runs, how it is loaded, seeds, batches, phrases.

diffusers and torch are imported only here and in the adapters, never by the rest of `feedback.synthesis`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

T = TypeVar("T")

NEEDS_GPU = ("this generator needs a GPU; use swap/paste or a cloud one (or allow it on the CPU, slowly, with "
             "EDGELOOP_DIFFUSION_ALLOW_CPU=1)")


class GpuRequired(RuntimeError):
    """A local generator was asked to run where there is no CUDA device, and the CPU was not allowed."""


def pick_device(allow_cpu: bool, *, half: str = "float16") -> tuple[str, Any]:
    """("cuda", half precision) when a GPU is there; ("cpu", float32) only when `allow_cpu`, else GpuRequired."""
    import torch

    if torch.cuda.is_available():
        return "cuda", getattr(torch, half)
    if not allow_cpu:
        raise GpuRequired(NEEDS_GPU)
    return "cpu", torch.float32


def load_pipeline(class_name: str, source: str | Path, *, allow_cpu: bool, half: str = "float16") -> Any:
    """A diffusers pipeline from a local folder (`save_pretrained` layout) or a hub id, on the GPU.

    A hub id is fetched only when the machine is online and HF_HUB_OFFLINE is unset; the device is checked
    first, so a CPU-only machine is told so before anything is read or downloaded.
    """
    import diffusers

    device, dtype = pick_device(allow_cpu, half=half)
    pipeline_class = getattr(diffusers, class_name)
    local = Path(source).expanduser()
    if local.is_dir():
        pipe = pipeline_class.from_pretrained(str(local), dtype=dtype, local_files_only=True)
    elif str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"no {class_name} weights at {source}: give a saved pipeline folder or a hub id")
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        pipe = pipeline_class.from_pretrained(str(source), dtype=dtype, local_files_only=offline)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_id(pipe: Any) -> str | None:
    """What a pipeline was loaded from (a hub id or a folder), for lineage; None for one built in memory."""
    name = getattr(pipe, "name_or_path", None)
    return str(name) if name else None


def image_seeds(seed: int, count: int) -> list[int]:
    """One seed per image, `seed + i` as the cloud generators count them, so image i is the same in any batch."""
    return [seed + i for i in range(count)]


def torch_generators(seeds: Sequence[int]) -> list[Any]:
    """CPU generators: diffusers draws the starting noise on them, so a seed means the same noise on any device."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError(f"batch size {size} must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def class_phrase(classes: Sequence[str], phrases: Mapping[str, Sequence[str]], class_id: int) -> str:
    """The phrase image models understand for a class: the first configured one, else the name in words."""
    if not 0 <= class_id < len(classes):
        raise ValueError(f"class id {class_id} is not one of the {len(classes)} classes {list(classes)}")
    name = classes[class_id]
    configured = list(phrases.get(name, ()))
    return configured[0] if configured else name.replace("_", " ")


def pil_rgb(image_bgr: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))


def bgr(image: Any) -> np.ndarray:
    """A pipeline's output image (PIL, or float HxWx3 in 0..1) as uint8 BGR."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)

