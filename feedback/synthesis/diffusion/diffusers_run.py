"""How a local (diffusers) generator runs its pipeline: the knobs every one has, and their loading from settings.

Keyword-only fields, so each generator's own (its pipeline, teacher, classes) keep their places before them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedback.synthesis.diffusion.diffusers_common import load_pipeline


@dataclass(kw_only=True)
class DiffusersRun:
    """Images per pipeline call, denoising steps, and the output side (None: the generator's own default)."""

    batch_size: int = 4
    steps: int = 30
    size: int | None = None

    @staticmethod
    def load(settings: Any, class_name: str, source: str, allow_cpu: bool | None,
             half: str = "float16") -> tuple[Any, dict[str, Any]]:
        """The pipeline the settings name (on the CPU only where they or `allow_cpu` allow it), and the run
        fields they set: what every generator's `from_settings` needs before its own fields."""
        allow = settings.diffusion_allow_cpu if allow_cpu is None else allow_cpu
        pipe = load_pipeline(class_name, source, allow_cpu=allow, half=half)
        return pipe, {"batch_size": settings.diffusion_batch_size, "steps": settings.diffusion_steps}
