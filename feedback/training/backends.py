"""The training backend port: where a challenger is trained (here, or on Vertex AI), the registry the same.

Each backend takes the same `TrainRequest` and returns a `TrainResult` for a model registered with its lineage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from feedback.training.train import TrainRequest, TrainResult, run_training
from store.settings import Workspace

# (epochs done, epochs in all or None while unknown, what the run is doing: "training", a Vertex job state)
Progress = Callable[[int, int | None, str], None]


class TrainingBackend(ABC):
    """A place to train. Callers name the request's fields as keywords; a backend implements `run` alone, so
    the request is stated once (TrainRequest) however many backends there are."""

    name: ClassVar[str]

    def train(self, ws: Workspace, *, progress: Progress | None = None, **request: Any) -> TrainResult:
        """Train on this backend; the keywords are a `TrainRequest`'s (an unknown one is a TypeError)."""
        return self.run(ws, TrainRequest(**request), progress)

    @abstractmethod
    def run(self, ws: Workspace, request: TrainRequest, progress: Progress | None = None) -> TrainResult: ...


class LocalBackend(TrainingBackend):
    """ultralytics in this process, on this machine's CPU or GPU."""

    name = "local"

    def run(self, ws: Workspace, request: TrainRequest, progress: Progress | None = None) -> TrainResult:
        epochs = (lambda done, total: progress(done, total, "training")) if progress else None
        return run_training(ws, request, epochs)
