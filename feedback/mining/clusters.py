"""Clustering one (class, failure kind) group of failures into blind spots: features, automatic k, noise, medoids,
and the matching that keeps a cluster's id when a re-run finds it again with nearly the same members.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

NOISE = -1
MIN_SIZE = 5  # a blind spot needs at least this many failures; fewer are noise
MAX_K = 8
# The crop embedding weighs as much as this many measured attributes. Enough to split failures that measure
# alike but look different (hoods vs hair), not so much that an embedder's own structure (random CLIP,
# detector features tuned to other cues) overrides the measured conditions prompts can name (dark, small).
EMBEDDING_WEIGHT = 2.0
EMBEDDING_COMPONENTS = 10
# A split must beat, by this much silhouette, the same k-means split of a Gaussian with the data's own
# covariance: elongated but single-blob data splits with a high silhouette too, and is still one blind spot.
SPLIT_MARGIN = 0.05
NULL_DRAWS = 3
PARSIMONY = 0.03
# ONE_THREAD: BLAS and OpenMP run single-threaded here. Groups are small (hundreds to a few thousand rows),
# where thread start-up costs more than it saves, and on a busy host 20-400x more (measured on 2 shared
# cores: a k-means fit on 108 rows 6 ms vs 120 ms; PCA of 125 x 256 well under 0.1 s vs 2 s).
CHOICE_SAMPLE = 1000  # k is chosen on a seeded sample of larger groups (silhouette is quadratic); all rows are fitted
OUTLIER_MADS = 3.0  # a member this many (scaled) MADs beyond its cluster's median distance is noise


def attribute_matrix(attrs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The measured numbers clustering reads, on scales where equal steps mean alike differences."""
    return np.array([[a["brightness"], a["contrast"], np.log1p(a["blur"]), np.log(a["rel_size"]),
                      a["centre_offset"], a["overlap"], np.log1p(a["neighbours"]), np.log(a["aspect"])]
                     for a in attrs], np.float64).reshape(len(attrs), 8)


def standardise(m: np.ndarray) -> np.ndarray:
    """Columns as z-scores (constant ones as zeros), clipped to +-4 so one extreme crop cannot stretch a whole axis.

    Plain z-scores rather than median/IQR: attributes that are mostly zero (overlap, neighbours) have no IQR,
    and scaled by a tiny spread their few non-zero rows became the largest distances of all (measured on the
    planted sites: k=2 recovered dark-vs-far with an adjusted Rand index of 0.4-1.0 that way, 0.83-1.0 with z).
    """
    std = m.std(axis=0)
    return np.clip((m - m.mean(axis=0)) / np.where(std > 1e-9, std, 1.0), -4, 4)


def features(vectors: np.ndarray, attrs: Sequence[Mapping[str, Any]], *,
             embedding_weight: float = EMBEDDING_WEIGHT) -> np.ndarray:
    """(N, components + 8): the crop embeddings' principal components, scaled so their total variance is
    `embedding_weight` attributes' worth, beside the standardised attributes.

    Detector features alone need not separate "dark" from "small", and those are what a prompt can say;
    the embedding still splits what measures alike but looks different.
    """
    a = standardise(attribute_matrix(attrs))
    if embedding_weight <= 0 or vectors.shape[1] == 0 or len(vectors) < 3:
        return a
    from sklearn.decomposition import (
        PCA,  # scikit-learn loads when mining runs, not with `edgeloop`
    )

    n_comp = min(EMBEDDING_COMPONENTS, len(vectors) - 1, vectors.shape[1])
    with threadpool_limits(limits=1):  # see ONE_THREAD
        z = PCA(n_components=n_comp, svd_solver="full").fit_transform(vectors.astype(np.float64))
    total = z.var(axis=0).sum()
    if total <= 1e-12:
        return a
    return np.hstack([z * np.sqrt(embedding_weight / total), a])


@dataclass(frozen=True)
class Split:
    labels: np.ndarray  # (N,) cluster index per row, NOISE for noise
    k: int  # clusters chosen before noise was taken out
    silhouette: float | None  # of the chosen split; None when the group stayed whole
    null_silhouette: float | None


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    return km.labels_, km.cluster_centers_


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(x, labels)) if len(np.unique(labels)) > 1 else -1.0


def split(x: np.ndarray, *, min_size: int = MIN_SIZE, seed: int = 0, max_k: int = MAX_K) -> Split:
    """Cluster the rows of `x`: k-means for k = 2 .. max_k (at most one cluster per `min_size` rows); among the
    k whose silhouette beats the Gaussian null's by SPLIT_MARGIN, the smallest within PARSIMONY of the best;
    else one cluster.

    Noise: clusters smaller than `min_size`, and members far beyond their cluster's usual distance from its
    centre. A group smaller than `min_size` is all noise. Deterministic for a given `seed` and row order.
    """
    with threadpool_limits(limits=1):  # see ONE_THREAD
        return _split(x, min_size, seed, max_k)


def _split(x: np.ndarray, min_size: int, seed: int, max_k: int) -> Split:
    n = len(x)
    if n < min_size:
        return Split(np.full(n, NOISE), 0, None, None)
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(n, CHOICE_SAMPLE, replace=False))] if n > CHOICE_SAMPLE else x
    mean, cov = sample.mean(axis=0), np.cov(sample, rowvar=False).reshape(x.shape[1], x.shape[1])
    nulls = [rng.multivariate_normal(mean, cov, size=len(sample), method="eigh") for _ in range(NULL_DRAWS)]
    scored = []
    for k in range(2, min(max_k, n // min_size) + 1):
        score = _silhouette(sample, _kmeans(sample, k, seed)[0])
        null = float(np.mean([_silhouette(z, _kmeans(z, k, seed)[0]) for z in nulls]))
        if score - null >= SPLIT_MARGIN:
            scored.append((k, score, null))
    # Parsimony: small samples split ever finer with a slowly rising silhouette; the fewest clusters
    # within PARSIMONY of the best split are as good a reading and make fewer, larger blind spots.
    top = max((s for _, s, _ in scored), default=None)
    best = next(((s, k, null) for k, s, null in scored if s >= top - PARSIMONY), None) if top is not None else None
    k = best[1] if best else 1
    labels, centres = _kmeans(x, k, seed) if k > 1 else (np.zeros(n, np.int64), x.mean(axis=0, keepdims=True))
    labels = labels.astype(np.int64)
    distance = np.linalg.norm(x - centres[labels], axis=1)
    for c in range(k):
        members = labels == c
        d = distance[members]
        mad = 1.4826 * np.median(np.abs(d - np.median(d)))
        far = members & (distance > np.median(d) + OUTLIER_MADS * max(mad, 1e-9))
        labels[far] = NOISE
    for c in range(k):
        if 0 < (labels == c).sum() < min_size:
            labels[labels == c] = NOISE
    # Renumber by size (largest first, ties by first member) so cluster order does not depend on k-means' own.
    kept = [c for c in range(k) if (labels == c).any()]
    order = sorted(kept, key=lambda c: (-(labels == c).sum(), int(np.flatnonzero(labels == c)[0])))
    remap = {c: i for i, c in enumerate(order)} | {NOISE: NOISE}
    return Split(np.array([remap[int(c)] for c in labels], np.int64), k,
                 best[0] if best else None, best[2] if best else None)


def medoids(x: np.ndarray, members: np.ndarray, count: int = 6) -> list[int]:
    """Indices of up to `count` members nearest their mean in feature space, nearest first (ties by index)."""
    idx = np.flatnonzero(members)
    if not len(idx):
        return []
    d = np.linalg.norm(x[idx] - x[idx].mean(axis=0), axis=1)
    return [int(i) for i in idx[np.lexsort((idx, d))][:count]]


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def match_previous(new: Sequence[set[str]], old: Mapping[str, set[str]], *, threshold: float = 0.5) -> list[str | None]:
    """For each new cluster (its member ids), the id of the previous cluster it continues, or None.

    Pairs are taken by Jaccard overlap, highest first, one-to-one; below `threshold` a cluster is new.
    """
    pairs = sorted(((jaccard(members, old_members), i, old_id) for i, members in enumerate(new)
                    for old_id, old_members in old.items()), key=lambda p: (-p[0], p[1], p[2]))
    out: list[str | None] = [None] * len(new)
    taken: set[str] = set()
    for score, i, old_id in pairs:
        if score < threshold:
            break
        if out[i] is None and old_id not in taken:
            out[i] = old_id
            taken.add(old_id)
    return out
