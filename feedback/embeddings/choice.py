"""Which embedder a workspace uses: CLIP when pretrained weights are configured, else the champion's features.

Offline there are no pretrained CLIP weights, and only the deployed detector's features carry meaning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feedback.embeddings.clip import ImageEmbedder
from feedback.embeddings.port import Embedder
from store.models import champion
from store.settings import Workspace

log = logging.getLogger(__name__)


def champion_weights(ws: Workspace) -> Path | None:
    """The champion's .pt, written once under workspace/models/, or None without a champion."""
    with ws.catalog.connect() as con:
        current = champion(con)
    if current is None:
        return None
    path = ws.settings.workspace / "models" / f"{current.id}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(ws.blobs.get(current.weights_sha256))
        tmp.replace(path)  # never a half-written checkpoint under the final name
    return path


def default_embedder(ws: Workspace, *, clip_model: str | None = None, clip_pretrained: str | None = None) -> Embedder:
    """CLIP if the user gave weights (settings or `clip_pretrained`), else the champion detector, else random CLIP."""
    s = ws.settings
    if clip_pretrained or s.clip_weights or s.clip_pretrained:
        return ImageEmbedder(model_name=clip_model or s.clip_model, weights=None if clip_pretrained else s.clip_weights,
                             pretrained=clip_pretrained or s.clip_pretrained)
    weights = champion_weights(ws)
    if weights is not None:
        # why: the detector adapter needs supervision (the edge extra), which a CLIP-only install may lack
        from feedback.embeddings.detector import DetectorEmbedder

        return DetectorEmbedder(weights)
    log.warning("no champion model and no CLIP weights: embeddings come from a randomly initialised CLIP "
                "(register a model with `edgeloop gate` or set EDGELOOP_CLIP_WEIGHTS)")
    return ImageEmbedder(model_name=clip_model or s.clip_model)
