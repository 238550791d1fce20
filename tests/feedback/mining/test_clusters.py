"""Clustering one failure group: automatic k, noise kept, determinism, features, and id matching across re-runs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from feedback.mining.clusters import (
    NOISE,
    attribute_matrix,
    features,
    match_previous,
    medoids,
    split,
    standardise,
)


def blobs(sizes: list[int], dims: int = 8, gap: float = 6.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(size=(n, dims)) + gap * np.eye(dims)[i % dims] for i, n in enumerate(sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("sizes", [[40, 40], [30, 50, 25]])
def test_separate_groups_are_found_with_their_number_chosen_automatically(sizes):
    x, truth = blobs(sizes)
    result = split(x, seed=0)
    assert result.k == len(sizes)
    kept = result.labels != NOISE
    assert kept.mean() >= 0.95
    assert adjusted_rand_score(truth[kept], result.labels[kept]) == pytest.approx(1.0)
    # Largest cluster first.
    assert np.bincount(result.labels[kept]).tolist() == sorted(np.bincount(result.labels[kept]), reverse=True)


def test_one_blob_stays_one_cluster_even_when_elongated():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 8)) * np.linspace(0.3, 3, 8)
    result = split(x, seed=0)
    assert result.k == 1 and result.silhouette is None
    assert set(result.labels.tolist()) <= {0, NOISE} and (result.labels == 0).mean() > 0.9


def test_noise_is_kept_as_its_own_label_never_dropped():
    x, _ = blobs([40, 40])
    x = np.vstack([x, np.full((1, 8), 60.0), 30 + np.random.default_rng(2).normal(size=(3, 8))])
    result = split(x, min_size=5, seed=0)
    assert len(result.labels) == len(x)
    assert result.labels[80] == NOISE  # far from everything
    assert (result.labels[81:] == NOISE).all()  # a clump smaller than min_size
    assert (split(x[:4], min_size=5).labels == NOISE).all()  # a group smaller than min_size is all noise


def test_deterministic_by_seed():
    x, _ = blobs([30, 30, 30], dims=5, gap=4.0, seed=3)
    a, b = split(x, seed=5), split(x, seed=5)
    assert np.array_equal(a.labels, b.labels) and a.k == b.k and a.silhouette == b.silhouette


def test_standardise_and_feature_weights():
    m = np.array([[0.0, 5.0], [0.0, 5.0], [0.0, 5.0], [0.0, 5.0], [100.0, 5.0]])
    z = standardise(m)
    assert z.max() <= 4 and np.allclose(z[:, 1], 0)  # a constant column is zeros, not NaN
    rng = np.random.default_rng(0)
    attrs = [{"brightness": rng.uniform(0, 255), "contrast": rng.uniform(5, 80), "blur": rng.uniform(10, 900),
              "rel_size": rng.uniform(0.02, 0.4), "centre_offset": rng.uniform(0, 1), "overlap": 0.0,
              "neighbours": float(rng.integers(0, 4)), "aspect": rng.uniform(0.5, 2)} for _ in range(30)]
    vectors = rng.normal(size=(30, 64)).astype(np.float32)
    assert attribute_matrix(attrs).shape == (30, 8)
    f = features(vectors, attrs, embedding_weight=2.0)
    assert f.shape == (30, 10 + 8)
    assert f[:, :10].var(axis=0).sum() == pytest.approx(2.0)  # the embedding weighs two attributes
    assert features(vectors, attrs, embedding_weight=0).shape == (30, 8)


def test_medoids_are_the_members_nearest_their_centre():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [3.0], [4.0]])
    members = np.array([True, True, True, False, True, True])
    assert medoids(x, members, count=3) == [2, 1, 4]
    assert medoids(x, np.zeros(6, bool)) == []


def test_previous_ids_follow_their_members():
    old = {"fc-a": {"1", "2", "3", "4"}, "fc-b": {"5", "6", "7"}, "fc-c": {"8", "9"}}
    new = [{"5", "6", "7", "10"}, {"1", "2", "3", "4", "11"}, {"12", "13"}]
    assert match_previous(new, old) == ["fc-b", "fc-a", None]
    # One-to-one: two new clusters split from one old one; only the closer keeps its id.
    assert match_previous([{"1", "2"}, {"1", "2", "3"}], {"fc-a": {"1", "2", "3", "4"}}) == [None, "fc-a"]
    assert match_previous([{"1"}], {"fc-a": {"1", "2", "3"}}) == [None]  # Jaccard 1/3: a new cluster
