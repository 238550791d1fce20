"""Which registered model a publish or rollout command means (an id, or "champion"), and the error publishing
raises; kept apart from the exporter so that resolving a name loads no image or ONNX libraries.
"""

from __future__ import annotations

from store.models import ModelRecord, champion, get_model
from store.settings import Workspace


class PublishError(ValueError):
    """The model cannot be published; the message names the model or frame and why."""


def resolve_model(ws: Workspace, ref: str) -> ModelRecord:
    """A model id (m-...) or "champion"."""
    with ws.catalog.connect() as con:
        model = champion(con) if ref == "champion" else get_model(con, ref)
    if model is None:
        raise PublishError("no champion in the registry yet (see `edgeloop gate`)" if ref == "champion"
                           else f"no model {ref!r} in the registry (see `edgeloop models`)")
    return model
