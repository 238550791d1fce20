"""Box-level copy-paste for the rare-aware recipe: verified rare-class crops pasted into other training frames.

ultralytics' own copy_paste needs segments and does nothing on boxes; this reuses the `paste` compositor on the
run's training images only (never the calibration split or the holdout), written beside them before training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from feedback.synthesis.compose.paste import PasteGenerator
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest
from store.blobs import BlobStore
from store.datasets import YoloItem

MAX_BACKGROUNDS = 200  # frames without the rare class to paste into: enough variety, bounded memory


@dataclass(frozen=True)
class Pasted:
    image_jpeg: bytes
    label: str  # YOLO lines, the background's boxes and the pasted ones
    frames: tuple[str, ...]  # sha256 of the background, then of the frames the crops came from


def material(items: Sequence[YoloItem], rare: Sequence[int], seed: int) -> list[YoloItem]:
    """The real training frames holding a rare box (donors, and backgrounds too) and up to MAX_BACKGROUNDS others,
    seeded; `items` must already be the frames this run trains on."""
    real = [i for i in items if i.split == "train" and i.origin == "real"]
    donors = [i for i in real if set(i.class_ids) & set(rare)]
    others = [i for i in real if not set(i.class_ids) & set(rare)]
    rng = np.random.default_rng(seed)
    picked = [others[k] for k in sorted(rng.permutation(len(others))[:MAX_BACKGROUNDS])]
    return donors + picked


def paste_rare(items: Sequence[YoloItem], blobs: BlobStore, rare: Sequence[int], count: int,
               seed: int) -> Iterator[Pasted]:
    """Up to `count` training images per rare class, each a frame of `items` with one verified crop of that
    class pasted where it meets no verified box (frames with no clear place are skipped)."""
    frames = [_frame(item, blobs) for item in material(items, rare, seed)]
    generator = PasteGenerator()
    for k, cls in enumerate(rare):
        if not any(cls in f.class_ids for f in frames):
            continue
        request = SynthesisRequest(target_class=int(cls), count=count, seed=seed * 1000 + k)
        for made in generator.generate(request, frames):
            if isinstance(made, Rejected):
                continue
            ok, jpeg = cv2.imencode(".jpg", made.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                continue
            h, w = made.image.shape[:2]
            lines = "".join(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                            f"{(y2 - y1) / h:.6f}\n" for (x1, y1, x2, y2), c in zip(made.boxes, made.class_ids,
                                                                                     strict=True))
            donors = tuple(edit["donor_image"] for edit in made.lineage.get("edits", ()))
            yield Pasted(jpeg.tobytes(), lines, (made.lineage["source_image"], *donors))


def _frame(item: YoloItem, blobs: BlobStore) -> LabelledFrame:
    image = cv2.imdecode(np.frombuffer(blobs.get(item.image_sha256), np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    rows = [line.split() for line in item.label.splitlines() if line.strip()]
    boxes = np.array([[(float(cx) - float(bw) / 2) * w, (float(cy) - float(bh) / 2) * h,
                       (float(cx) + float(bw) / 2) * w, (float(cy) + float(bh) / 2) * h]
                      for _, cx, cy, bw, bh in rows], dtype=np.float64).reshape(-1, 4)
    return LabelledFrame(item.image_sha256, image, boxes, np.array([int(r[0]) for r in rows], dtype=np.int64))
