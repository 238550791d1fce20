"""The training backend port: where a challenger is trained (here, or on Vertex AI), the registry the same.

Each backend takes the same request and returns a `TrainResult` for a model registered with its lineage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from feedback.training.recipe import Recipe
from feedback.training.train import TrainResult, train
from store.settings import Workspace

# (epochs done, epochs in all or None while unknown, what the run is doing: "training", a Vertex job state)
Progress = Callable[[int, int | None, str], None]

class TrainingBackend(Protocol):
    name: str

    def train(
        self,
        ws: Workspace,
        *,
        dataset_version: int | None = None,
        parent: str | None = "champion",
        base: str = "yolov8n.yaml",
        profile: str | None = None,
        overrides: dict[str, Any] | None = None,
        progress: Progress | None = None,
        seed: int = 0,
        recipe: Recipe | None = None,
        watch: Sequence[str] = (),
    ) -> TrainResult: ...


class LocalBackend:
    """ultralytics in this process, on this machine's CPU or GPU."""

    name = "local"

    def train(
        self,
        ws: Workspace,
        *,
        dataset_version: int | None = None,
        parent: str | None = "champion",
        base: str = "yolov8n.yaml",
        profile: str | None = None,
        overrides: dict[str, Any] | None = None,
        progress: Progress | None = None,
        seed: int = 0,
        recipe: Recipe | None = None,
        watch: Sequence[str] = (),
    ) -> TrainResult:
        epochs = (lambda done, total: progress(done, total, "training")) if progress else None
        return train(ws, dataset_version=dataset_version, parent=parent, base=base, profile=profile or "cpu",
                     overrides=overrides, progress=epochs, seed=seed, recipe=recipe, watch=watch)
