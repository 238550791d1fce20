"""The generator port: a request for more of one blind spot in, labelled images with lineage out.

Adapters each live in a module of their own, by kind: `compose` (swap, paste), `cloud` (gemini-edit, gemini,
imagen), `diffusion` (gligen, sd-inpaint, qwen-image and qwen-image-edit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SynthesisRequest:
    """What to make: `count` images teaching `target_class`, shaped by one failure cluster."""

    target_class: int
    count: int
    seed: int = 0
    cluster_id: str | None = None
    prompt: str | None = None  # text-to-image generators
    negative_prompt: str | None = None
    edit_instruction: str | None = None  # edit generators ("remove the hard hat from this worker's head; ...")
    confusable_classes: tuple[int, ...] = ()  # swap: instances of these become `target_class`
    attributes: dict[str, Any] = field(default_factory=dict)  # the cluster's measured attributes
    max_cost_usd: float | None = None  # cloud generators stop before spending more


@dataclass(frozen=True)
class LabelledFrame:
    """A verified real frame: the only material generators may copy from or edit."""

    image_sha256: str
    image: np.ndarray  # HxWx3 uint8 BGR
    boxes: np.ndarray  # (N, 4) float xyxy pixels
    class_ids: np.ndarray  # (N,) int


@dataclass
class SyntheticImage:
    """One generated image, its boxes (by construction or from a teacher) and where it came from.

    Lineage keys the filters read: `new_boxes` (indices of the boxes the generator made; absent: all of them,
    as for text-to-image), `changed_regions` (integer [x1, y1, x2, y2] rects holding every changed pixel, so
    carried-over boxes can be checked for being painted over) and `source_image` (the real frame edited).
    """

    image: np.ndarray  # HxWx3 uint8 BGR
    boxes: np.ndarray  # (N, 4) float xyxy pixels
    class_ids: np.ndarray  # (N,) int
    lineage: dict[str, Any]  # generator, model id, seed, source image sha, edited box, prompt, cost ...


@dataclass(frozen=True)
class Rejected:
    """A generation that produced nothing usable (a safety filter, no target found), counted with its reason."""

    reason: str
    lineage: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """`name` is recorded in lineage; `generate` yields up to `request.count` results, deterministic by seed."""

    name: str

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        ...
