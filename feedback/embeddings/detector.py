"""The deployed detector's own features as embeddings: meaningful offline, specific to the site's domain.

Pooled neck features of the YOLO checkpoint for whole frames and for box crops; one forward also detects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import supervision as sv

from edge.detectors.metadata import file_sha256
from edge.detectors.postprocess import decode
from edge.detectors.preprocess import letterbox, to_tensor
from feedback.embeddings.port import CROP_CONTEXT, crop_with_context, unit_rows

CROP_SIZE = 96  # px: a head crop at this size keeps what tells a hat from hair (measured on PPE)


class DetectorEmbedder:
    """An ultralytics `.pt` detector as an embedder: BGR in, unit float32 vectors out.

    The vector is the average-pooled output of `layers` (default: the last neck layer before the
    head, as `YOLO.embed` does). Frames are letterboxed to the model's training size, crops (with
    `context`) to `crop_size`. The name carries the weights' sha256, so a new champion's vectors
    never mix with the old one's.
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        imgsz: int | None = None,
        crop_size: int = CROP_SIZE,
        context: float = CROP_CONTEXT,
        layers: Sequence[int] | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        import torch
        from ultralytics import YOLO  # heavy: loaded only when an embedder is made

        weights = Path(weights)
        if not weights.is_file() or weights.suffix != ".pt":
            raise ValueError(f"detector embeddings need an ultralytics .pt checkpoint, got {weights}")
        yolo = YOLO(str(weights), task="detect")
        self._torch = torch
        self._device = torch.device(device)
        self._model = yolo.model.float().eval().to(self._device)
        self.names: dict[int, str] = {int(k): str(v) for k, v in yolo.names.items()}
        stride = int(max(getattr(self._model, "stride", [32])))
        size = int(imgsz or yolo.overrides.get("imgsz") or 640)
        self.imgsz = max(stride, size // stride * stride)
        self.crop_size = max(stride, crop_size // stride * stride)
        self.context = context
        self.layers = tuple(layers) if layers else (len(self._model.model) - 2,)
        self.batch_size = batch_size
        self.weights_sha256 = file_sha256(weights)
        self.name = (f"detector:{self.weights_sha256[:16]}:L{'-'.join(map(str, self.layers))}"
                     f":{self.imgsz}:c{self.crop_size}x{context:g}")
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._forward(np.zeros((1, 3, self.crop_size, self.crop_size), np.float32))[1].shape[1])
        return self._dim

    def embed(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        inputs = [letterbox(img, (self.imgsz, self.imgsz))[0] for img in images_bgr]
        return self._features(inputs)

    def embed_boxes(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        crops = [letterbox(crop_with_context(image_bgr, b, self.context), (self.crop_size, self.crop_size))[0]
                 for b in boxes]
        return self._features(crops)

    def embed_boxes_of(self, images_bgr: list[np.ndarray], boxes_xyxy: list[np.ndarray]) -> list[np.ndarray]:
        """`embed_boxes` for several images at once: their crops share batches (one forward, not one per image)."""
        boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes_xyxy]
        if not boxes:
            return []
        crops = [letterbox(crop_with_context(img, b, self.context), (self.crop_size, self.crop_size))[0]
                 for img, bs in zip(images_bgr, boxes, strict=True) for b in bs]
        vectors = self._features(crops)
        return np.split(vectors, np.cumsum([len(b) for b in boxes])[:-1])

    def detect_and_embed(self, image_bgr: np.ndarray, *, conf: float = 0.05,
                         ) -> tuple[sv.Detections, np.ndarray, np.ndarray]:
        """One frame: its detections at `conf` (the edge's own decoding), the frame's vector, and each box's."""
        img, box = letterbox(image_bgr, (self.imgsz, self.imgsz))
        raw, features = self._forward(to_tensor(img))
        detections = decode(raw, box, self.names, conf=conf)
        return detections, unit_rows(features)[0], self.embed_boxes(image_bgr, detections.xyxy)

    def detect_frames(self, images_bgr: list[np.ndarray], *,
                      conf: float = 0.05) -> tuple[list[sv.Detections], np.ndarray]:
        """Each frame's detections at `conf` and its vector, one forward per batch and no box crops."""
        if not images_bgr:
            return [], np.zeros((0, self.dim), np.float32)
        boxed = [letterbox(img, (self.imgsz, self.imgsz)) for img in images_bgr]
        detections, features = [], []
        for start in range(0, len(boxed), self.batch_size):
            chunk = boxed[start : start + self.batch_size]
            raw, pooled = self._forward(to_tensor([img for img, _ in chunk]))
            detections += [decode(raw[i : i + 1], box, self.names, conf=conf) for i, (_, box) in enumerate(chunk)]
            features.append(pooled)
        return detections, unit_rows(np.concatenate(features))

    def _features(self, letterboxed: list[np.ndarray]) -> np.ndarray:
        if not letterboxed:
            return np.zeros((0, self.dim), np.float32)
        out = [self._forward(to_tensor(letterboxed[i : i + self.batch_size]))[1]
               for i in range(0, len(letterboxed), self.batch_size)]
        return unit_rows(np.concatenate(out))

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw head output (B, 4 + nc, anchors), pooled features (B, dim)) in one pass."""
        torch = self._torch
        pooled: dict[int, torch.Tensor] = {}
        hooks = [self._model.model[i].register_forward_hook(
            lambda _m, _in, out, i=i: pooled.__setitem__(i, out.mean(dim=(2, 3)))) for i in self.layers]
        try:
            with torch.inference_mode():
                out = self._model(torch.from_numpy(batch).to(self._device))
        finally:
            for hook in hooks:
                hook.remove()
        raw = out[0] if isinstance(out, (tuple, list)) else out
        features = torch.cat([pooled[i] for i in self.layers], dim=1)
        return raw.float().cpu().numpy(), features.float().cpu().numpy()
