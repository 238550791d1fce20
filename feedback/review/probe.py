"""A second opinion on every box: per-class logistic probes on the detector's own box embeddings.

Fit on verified crops in seconds; they ask of each candidate box "how likely is this really the rare class".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

RARE_SHARE = 0.1  # a class with fewer verified boxes than this share of the commonest class's is rare
MIN_POSITIVES = 2  # a probe needs at least this many verified boxes of its class


def rare_classes(counts: Mapping[int, int], watch: Sequence[int] = ()) -> list[int]:
    """Classes to look for: those watched explicitly, and those with fewer than RARE_SHARE of the
    commonest class's verified boxes (a class nobody has verified yet counts 0, so it is rare)."""
    top = max(counts.values(), default=0)
    found = {c for c, n in counts.items() if n < RARE_SHARE * top}
    return sorted(found | set(watch))


@dataclass(frozen=True)
class Probe:
    """One binary logistic regression per rare class (that has enough verified boxes)."""

    coef: dict[int, np.ndarray]  # class -> (dim,)
    intercept: dict[int, float]
    positives: dict[int, int]

    @property
    def classes(self) -> list[int]:
        return sorted(self.coef)

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """(N, len(classes)) probabilities that each box is each rare class; (N, 0) without probes."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if not self.coef or not len(vectors):
            return np.zeros((len(vectors), len(self.coef)))
        logits = np.stack([vectors @ self.coef[c] + self.intercept[c] for c in self.classes], axis=1)
        return 1.0 / (1.0 + np.exp(-logits))


def fit_probe(vectors: np.ndarray, class_ids: np.ndarray, targets: Sequence[int], *, seed: int = 0) -> Probe:
    """Class-weighted logistic regression of "class c" against every other verified box, for each c in
    `targets`; a target with fewer than MIN_POSITIVES boxes (or no negatives) gets no probe."""
    from sklearn.linear_model import LogisticRegression

    vectors = np.asarray(vectors, dtype=np.float64)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    coef, intercept, positives = {}, {}, {}
    for c in targets:
        y = class_ids == c
        if y.sum() < MIN_POSITIVES or y.all():
            log.info("class %d: %d verified boxes, too few for a probe", c, int(y.sum()))
            continue
        # balanced: 29 positives against 2,400 negatives must still move the boundary.
        model = LogisticRegression(class_weight="balanced", C=1.0, max_iter=2000, random_state=seed)
        model.fit(vectors, y)
        coef[int(c)], intercept[int(c)], positives[int(c)] = model.coef_[0], float(model.intercept_[0]), int(y.sum())
    return Probe(coef, intercept, positives)
