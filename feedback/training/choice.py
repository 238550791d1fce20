"""The training backend a stage asked for, by name: the factory beside the registry of backends.

Adapters (local, vertex) import the port in `backends`; only this module knows them all.
"""

from __future__ import annotations

from feedback.training.backends import LocalBackend, TrainingBackend
from feedback.training.train import TrainingError
from store.settings import Workspace

BACKENDS = ("local", "vertex")


def get_backend(name: str, ws: Workspace) -> TrainingBackend:
    if name == "local":
        return LocalBackend()
    if name == "vertex":
        try:
            # Inside: the google-cloud SDKs are an optional extra, loaded only when Vertex is asked for.
            from feedback.training.vertex import VertexBackend
        except ModuleNotFoundError as exc:
            raise TrainingError(f"the vertex backend needs {exc.name}: pip install 'edgeloop[vertex]'") from exc
        return VertexBackend.from_settings(ws.settings)
    raise TrainingError(f"training backend {name!r} is not one of {', '.join(BACKENDS)}")
