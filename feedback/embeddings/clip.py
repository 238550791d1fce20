"""The CLIP adapter of the embedder port (open_clip), for users who have pretrained weights.

Without weights it runs randomly initialised: fit for tests, meaningless for selection.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from feedback.embeddings.port import crop_with_context
from store.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

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
        self.model_name = model_name
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

    def embed_boxes(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        return self.embed([crop_with_context(image_bgr, b) for b in boxes])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 unit rows in the image vectors' space: zero-shot tags score crops against these."""
        import open_clip
        import torch

        tokens = open_clip.get_tokenizer(self.model_name)(texts)
        with torch.inference_mode():
            features = self._model.encode_text(tokens.to(self.device))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

    def _to_tensor(self, image_bgr: np.ndarray) -> torch.Tensor:
        from PIL import Image

        # The checkpoint's own preprocessing (resize, crop, normalise) on RGB, as it was trained.
        return self._preprocess(Image.fromarray(np.ascontiguousarray(image_bgr[..., ::-1])))
