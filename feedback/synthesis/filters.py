"""Filters for synthetic images: label sanity, near-duplicates, cluster likeness, domain gap, the champion's verdict.

Pure functions over arrays; `feedback.synthesis.service` runs them and keeps every score in the image's lineage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from feedback.embeddings.port import crop_with_context
from feedback.review.failures import box_iou
from feedback.synthesis.port import SyntheticImage

# Reasons an image is rejected, as the report counts them.
BOX_OUTSIDE = "box_outside"
BAD_CLASS = "bad_class"
NO_NEW_BOX = "no_new_box"
BOX_TOO_SMALL = "box_too_small"
BOX_COVERED = "box_covered"
NEAR_DUPLICATE = "near_duplicate"
OFF_CLUSTER = "off_cluster"


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds; each was measured on PPE crops with the champion's features (see bench/synth.py).

    `dup_hamming`: perceptual hashes of a new object's crop this close (bits of 64) to a reference mean the
    same picture; `dup_cosine`: embedding cosine at or above it means the same. `cluster_quantile`: a new
    object must be as like the cluster's centroid as this quantile of the cluster's own members are.
    """

    min_box_px: float = 8.0
    max_covered: float = 0.25
    dup_hamming: int = 4
    dup_cosine: float = 0.998
    cluster_quantile: float = 0.05
    min_cluster_cosine: float = 0.5  # when the cluster's members are unknown, only its centroid
    verdict_iou: float = 0.5
    verdict_conf: float = 0.25


@dataclass(frozen=True)
class Outcome:
    """A filter's answer: None when it passes, else the reason and a detail for people; scores either way."""

    reason: str | None
    detail: str | None
    scores: dict[str, Any]


def new_box_indices(image: SyntheticImage) -> list[int]:
    """Boxes the generator made (lineage `new_boxes`, or the one `edited_box_index`); else every box is new
    (text-to-image)."""
    new = image.lineage.get("new_boxes")
    if new is None and image.lineage.get("edited_box_index") is not None:
        new = [image.lineage["edited_box_index"]]
    return list(range(len(image.boxes))) if new is None else [int(i) for i in new]


def changed_regions(image: SyntheticImage) -> list[list[int]]:
    """Rects holding every changed pixel (lineage `changed_regions`, or an edit's `neighbourhood`); [] if unknown."""
    regions = image.lineage.get("changed_regions")
    if regions is None and image.lineage.get("neighbourhood") is not None:
        regions = [image.lineage["neighbourhood"]]
    return [[int(np.floor(r[0])), int(np.floor(r[1])), int(np.ceil(r[2])), int(np.ceil(r[3]))] for r in regions or []]


def label_sanity(image: SyntheticImage, n_classes: int, config: FilterConfig = FilterConfig()) -> Outcome:
    """Boxes inside the frame with known classes; at least one new box, none smaller than `min_box_px`;
    no carried-over box hidden (more than `max_covered`) under the changed regions (lineage `changed_regions`),
    except one around a new box (the worker whose head was swapped)."""
    h, w = image.image.shape[:2]
    boxes = np.asarray(image.boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(image.class_ids).reshape(-1)
    new = new_box_indices(image)
    scores: dict[str, Any] = {"n_boxes": len(boxes), "n_new": len(new)}
    if len(classes) != len(boxes):
        return Outcome(BAD_CLASS, f"{len(boxes)} boxes but {len(classes)} class ids", scores)
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | \
        (boxes[:, 3] > h) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return Outcome(BOX_OUTSIDE, f"box {i} {boxes[i].round(1).tolist()} is not inside the {w}x{h} frame", scores)
    if ((classes < 0) | (classes >= n_classes)).any():
        return Outcome(BAD_CLASS, f"class ids {sorted(set(classes.tolist()))} outside 0..{n_classes - 1}", scores)
    if not new or any(not 0 <= i < len(boxes) for i in new):
        return Outcome(NO_NEW_BOX, f"new boxes {new} of {len(boxes)}", scores)
    sides = np.minimum(boxes[new, 2] - boxes[new, 0], boxes[new, 3] - boxes[new, 1])
    scores["min_new_side_px"] = round(float(sides.min()), 2)
    if sides.min() < config.min_box_px:
        return Outcome(BOX_TOO_SMALL, f"a new box is {sides.min():.1f} px on a side (< {config.min_box_px:g})",
                       scores)
    changed = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in changed_regions(image):
        changed[max(0, int(y1)):int(y2), max(0, int(x1)):int(x2)] = True
    old = [i for i in range(len(boxes)) if i not in set(new)
           and not any(_share_inside(boxes[i], boxes[j]) >= 0.9 for j in new)]
    covered = [float(changed[int(b[1]):int(np.ceil(b[3])), int(b[0]):int(np.ceil(b[2]))].mean())
               if changed.any() else 0.0 for b in boxes[old]]
    scores["max_covered"] = round(max(covered, default=0.0), 4)
    if covered and max(covered) > config.max_covered:
        i = old[int(np.argmax(covered))]
        return Outcome(BOX_COVERED, f"carried-over box {i} is {max(covered):.0%} under changed pixels", scores)
    return Outcome(None, None, scores)


def _share_inside(outer: np.ndarray, inner: np.ndarray) -> float:
    """Share of `inner`'s area inside `outer` (both xyxy)."""
    ix = max(0.0, min(outer[2], inner[2]) - max(outer[0], inner[0]))
    iy = max(0.0, min(outer[3], inner[3]) - max(outer[1], inner[1]))
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return float(ix * iy / area) if area > 0 else 0.0


def phash(image_bgr: np.ndarray) -> int:
    """64-bit perceptual hash: the signs of the 8x8 lowest DCT frequencies of a 32x32 grey thumbnail vs their median."""
    grey = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(np.packbits(bits).view(">u8")[0])


def box_hashes(image_bgr: np.ndarray, boxes: np.ndarray) -> list[int]:
    """Perceptual hashes of box crops with the embedder's context, so both compare the same pixels."""
    return [phash(crop_with_context(image_bgr, b)) for b in np.asarray(boxes, np.float64).reshape(-1, 4)]


def hamming(a: int, refs: np.ndarray) -> np.ndarray:
    """Bits differing between hash `a` and each of `refs` (uint64)."""
    return np.bitwise_count(np.bitwise_xor(np.uint64(a), np.asarray(refs, np.uint64))).astype(np.int64)


class NearDuplicates:
    """References a new object must not repeat: real verified crops of its class and kept synthetic ones."""

    def __init__(self, config: FilterConfig = FilterConfig()) -> None:
        self.config = config
        self._hashes = np.zeros(0, np.uint64)
        self._hash_refs: list[str] = []
        self._vectors: np.ndarray | None = None
        self._vector_refs: list[str] = []

    def __len__(self) -> int:
        return max(len(self._hash_refs), len(self._vector_refs))

    def add(self, refs: list[str], hashes: list[int] | None = None, vectors: np.ndarray | None = None) -> None:
        if hashes is not None:
            self._hashes = np.concatenate([self._hashes, np.asarray(hashes, np.uint64)])
            self._hash_refs += list(refs)
        if vectors is not None and len(vectors):
            vectors = np.asarray(vectors, np.float32)
            self._vectors = vectors if self._vectors is None else np.concatenate([self._vectors, vectors])
            self._vector_refs += list(refs)

    def check(self, hashes: list[int], vectors: np.ndarray | None) -> Outcome:
        """Near-duplicate when any new object's hash or vector is within the thresholds of a reference."""
        scores: dict[str, Any] = {}
        detail: str | None = None
        if len(self._hashes):
            distances = [hamming(h, self._hashes) for h in hashes]
            best = [int(d.min()) for d in distances]
            i = int(np.argmin(best))
            scores["phash_min_hamming"] = best[i]
            scores["phash_nearest"] = self._hash_refs[int(distances[i].argmin())]
            if best[i] <= self.config.dup_hamming:
                detail = f"perceptual hash {best[i]} bits from {scores['phash_nearest']}"
        if vectors is not None and len(vectors) and self._vectors is not None:
            similarity = np.asarray(vectors, np.float32) @ self._vectors.T
            k, j = np.unravel_index(int(similarity.argmax()), similarity.shape)
            scores["max_cosine"] = round(float(similarity[k, j]), 5)
            scores["cosine_nearest"] = self._vector_refs[int(j)]
            if similarity[k, j] >= self.config.dup_cosine and detail is None:
                detail = f"embedding cosine {similarity[k, j]:.4f} with {scores['cosine_nearest']}"
        return Outcome(NEAR_DUPLICATE if detail else None, detail, scores)


def cluster_threshold(members: np.ndarray, centroid: np.ndarray, quantile: float) -> float:
    """The cosine to the centroid that all but `quantile` of the cluster's own members reach."""
    return float(np.quantile(np.asarray(members, np.float32) @ unit(centroid), quantile))


def cluster_similarity(vectors: np.ndarray, centroid: np.ndarray, threshold: float) -> Outcome:
    """Mean cosine of the new objects to the cluster's centroid; off-cluster below `threshold`."""
    cosine = float(np.mean(np.asarray(vectors, np.float32) @ unit(centroid)))
    scores = {"cluster_cosine": round(cosine, 5), "cluster_threshold": round(threshold, 5)}
    if cosine < threshold:
        return Outcome(OFF_CLUSTER, f"cosine {cosine:.3f} to the cluster's centroid is below {threshold:.3f}", scores)
    return Outcome(None, None, scores)


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of vectors (rows), as FID computes it.

    tr(sqrt(S_a S_b)) is taken as the trace of sqrt(sqrt(S_a) S_b sqrt(S_a)), a symmetric matrix, so
    eigenvalues stay real.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 vectors on each side, got {len(a)} and {len(b)}")
    mu = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(max(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross, 0.0))


def champion_verdict(boxes: np.ndarray, classes: np.ndarray, det_boxes: np.ndarray, det_classes: np.ndarray,
                     det_conf: np.ndarray, config: FilterConfig = FilterConfig()) -> list[dict[str, Any]]:
    """What the champion says at each intended box: `found` (its class, at verdict_conf or more), `confused`
    (another class there), or `missed`. Recorded only: the ones it gets wrong are the hard ones worth having."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_conf = np.asarray(det_conf, np.float64).reshape(-1)
    det_classes = np.asarray(det_classes, np.int64).reshape(-1)
    iou = box_iou(boxes, det_boxes) if len(det_boxes) else np.zeros((len(boxes), 0))
    out = []
    for k, cls in enumerate(np.asarray(classes).reshape(-1)):
        overlapping = iou[k] >= config.verdict_iou
        same = np.flatnonzero(overlapping & (det_classes == cls))
        near = np.flatnonzero(overlapping & (det_conf >= config.verdict_conf))
        # The intended class's best score there, even below the threshold: how close the model came.
        target_conf = float(det_conf[same].max()) if len(same) else 0.0
        if target_conf >= config.verdict_conf:
            verdict, predicted, conf = "found", int(cls), target_conf
        elif len(near):
            best = near[int(det_conf[near].argmax())]
            verdict, predicted, conf = "confused", int(det_classes[best]), float(det_conf[best])
        else:
            verdict, predicted, conf = "missed", None, 0.0
        out.append({"verdict": verdict, "predicted_class": predicted, "confidence": round(conf, 4),
                    "target_confidence": round(target_conf, 4), "hard": verdict != "found"})
    return out
