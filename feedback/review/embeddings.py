"""CLIP image embeddings of captures, stored in the catalog so review selection can spread its picks.

Each vector is stored under the name of the model and weights that made it, so vectors never mix.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyarrow as pa
from rich.progress import Progress

from edge.protocol import utc_now
from store.settings import Settings, Workspace

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KIND = "capture"
# Random initialisation is seeded so that two processes testing with random weights agree.
RANDOM_INIT_SEED = 0


def embedder_name(model_name: str, weights: Path | None = None, pretrained: str | None = None) -> str:
    """The name vectors are stored under: architecture plus which weights, without loading the model.

    A local file is named by its content hash, so replacing the file with other weights
    (same path) gives a new name and the old vectors are not reused.
    """
    if weights is not None:
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return f"{model_name}:sha256-{digest.hexdigest()[:16]}"
    if pretrained is not None:
        return f"{model_name}:{pretrained}"
    return f"{model_name}:random-init-{RANDOM_INIT_SEED}"


def settings_embedder_name(settings: Settings) -> str:
    return embedder_name(settings.clip_model, settings.clip_weights, settings.clip_pretrained)


class ImageEmbedder:
    """An open_clip image tower: BGR frames in, L2-normalised float32 vectors out.

    `weights`: a local checkpoint file. `pretrained`: an open_clip tag (e.g. "laion2b_s34b_b79k"
    for ViT-B-32) that open_clip downloads, so only when a user asks for it and is online.
    Neither: randomly initialised weights, fit for tests only (the vectors carry no meaning).
    """

    def __init__(
        self,
        model_name: str = "ViT-S-32-alt",
        weights: Path | None = None,
        pretrained: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        # torch and open_clip load here, not at import: selection names models without them.
        import open_clip
        import torch

        if weights is not None and pretrained is not None:
            raise ValueError("give either a weights file or a pretrained tag, not both")
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"CLIP weights file {weights} does not exist")
        self.name = embedder_name(model_name, weights, pretrained)
        self.device = torch.device(device)
        self.batch_size = batch_size
        source = str(weights) if weights is not None else pretrained
        if source is None:
            log.warning(
                "CLIP model %s has RANDOMLY INITIALISED weights (no clip_weights or clip_pretrained set): "
                "its embeddings are fit for tests only, not for choosing what people review", model_name,
            )
        # fork_rng: seeding for a reproducible random init must not reseed the caller's torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, self._preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=source, device=self.device, require_pretrained=source is not None,
            )
        self._model = model.eval()

    def embed(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32, each row of unit length; images are HxWx3 uint8 BGR, as OpenCV decodes them."""
        import torch

        out = []
        for start in range(0, len(images_bgr), self.batch_size):
            batch = torch.stack([self._to_tensor(img) for img in images_bgr[start : start + self.batch_size]])
            with torch.inference_mode():
                features = self._model.encode_image(batch.to(self.device))
            out.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    @property
    def dim(self) -> int:
        return int(self._model.visual.output_dim)

    def _to_tensor(self, image_bgr: np.ndarray) -> torch.Tensor:
        from PIL import Image

        # The checkpoint's own preprocessing (resize, crop, normalise) on RGB, as it was trained.
        return self._preprocess(Image.fromarray(np.ascontiguousarray(image_bgr[..., ::-1])))


def embed_captures(ws: Workspace, embedder: ImageEmbedder, *, batch_size: int = 32, progress: bool = True) -> int:
    """Embed every capture that has no vector from this model yet; returns how many vectors were added.

    The catalog is opened briefly per batch, never across inference, so ingest and review
    flows can write in between. Captures sharing an image (same sha256) are embedded once.
    Unreadable images are logged and skipped (they are retried on the next run).
    """
    with ws.catalog.connect() as con:
        todo = con.execute(
            "SELECT id, sha256 FROM captures c WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
            "WHERE e.kind = ? AND e.ref = c.id AND e.model = ?) ORDER BY sha256, id",
            [KIND, embedder.name],
        ).fetchall()
    by_sha: dict[str, list[str]] = {}
    for capture_id, sha in todo:
        by_sha.setdefault(sha, []).append(capture_id)
    shas = list(by_sha)
    added = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"embedding captures with {embedder.name}", total=len(todo))
        for start in range(0, len(shas), batch_size):
            batch = shas[start : start + batch_size]
            images = {sha: img for sha in batch if (img := _read_image(ws, sha)) is not None}
            vectors = embedder.embed(list(images.values()))
            rows = [(capture_id, vec) for sha, vec in zip(images, vectors) for capture_id in by_sha[sha]]
            added += _store(ws, embedder.name, rows)
            bar.advance(task, sum(len(by_sha[sha]) for sha in batch))
    return added


def _read_image(ws: Workspace, sha: str) -> np.ndarray | None:
    try:
        data = ws.blobs.get(sha)
    except KeyError:
        log.warning("capture image %s is missing from the blob store; not embedded", sha)
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        log.warning("capture image %s could not be decoded; not embedded", sha)
    return image


def _store(ws: Workspace, model: str, rows: list[tuple[str, np.ndarray]]) -> int:
    if not rows:
        return 0
    flat = np.concatenate([vec for _, vec in rows]).astype(np.float32, copy=False)
    dim = flat.size // len(rows)
    # One Arrow list column built from the flat buffer: no per-float Python objects.
    vectors = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, dim, dtype=np.int32)), pa.array(flat))
    table = pa.table({
        "kind": pa.array([KIND] * len(rows)),
        "ref": pa.array([capture_id for capture_id, _ in rows]),
        "model": pa.array([model] * len(rows)),
        "vector": vectors,
        "created_at": pa.array([utc_now()] * len(rows), pa.timestamp("us", tz="UTC")),
    })
    with ws.catalog.connect() as con:
        con.register("batch", table)
        # A concurrent run may have stored some of these already; theirs stand.
        added = con.execute("INSERT INTO embeddings BY NAME SELECT * FROM batch ON CONFLICT DO NOTHING").fetchone()[0]
        con.unregister("batch")
    return int(added)
