"""Each filter with a case that passes and one that fails, and the Fréchet distance against scipy's matrix root."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from feedback.synthesis.filters import (
    BAD_CLASS, BOX_COVERED, BOX_OUTSIDE, BOX_TOO_SMALL, NEAR_DUPLICATE, NO_NEW_BOX, OFF_CLUSTER, FilterConfig,
    NearDuplicates, box_hashes, champion_verdict, changed_regions, cluster_similarity, cluster_threshold,
    frechet_distance, hamming, label_sanity, new_box_indices, phash,
)
from feedback.synthesis.port import SyntheticImage

from .offline_frames import background, pattern


def image(boxes, classes, **lineage) -> SyntheticImage:  # noqa: ANN001
    return SyntheticImage(background(0), np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64),
                          {"new_boxes": [len(boxes) - 1], **lineage})


def test_label_sanity_passes_a_good_image_and_names_each_fault():
    good = image([(10, 10, 60, 60), (100, 40, 130, 80)], [0, 1], changed_regions=[[95, 35, 135, 85]])
    assert label_sanity(good, 4).reason is None
    assert label_sanity(good, 4).scores["max_covered"] == 0.0
    cases = {
        BOX_OUTSIDE: image([(10, 10, 60, 60), (200, 40, 230, 80)], [0, 1]),  # the frame is 220 wide
        BAD_CLASS: image([(10, 10, 60, 60), (100, 40, 130, 80)], [0, 7]),
        BOX_TOO_SMALL: image([(10, 10, 60, 60), (100, 40, 105, 80)], [0, 1]),
        BOX_COVERED: image([(10, 10, 60, 60), (100, 40, 130, 80)], [0, 1], changed_regions=[[5, 5, 65, 65]]),
        NO_NEW_BOX: image([(10, 10, 60, 60)], [0], new_boxes=[]),
    }
    for reason, bad in cases.items():
        outcome = label_sanity(bad, 4, FilterConfig(min_box_px=8))
        assert outcome.reason == reason, (reason, outcome)
        assert outcome.detail
    # The worker around a swapped head is part of the same object: its covered share does not count.
    worker = image([(90, 30, 140, 120), (100, 40, 130, 80)], [3, 1], changed_regions=[[95, 35, 135, 85]])
    assert label_sanity(worker, 4, FilterConfig(max_covered=0.25)).reason is None
    beside = image([(90, 30, 140, 120), (100, 40, 130, 80)], [3, 1], changed_regions=[[88, 28, 142, 122]],
                   new_boxes=[1])
    assert label_sanity(beside, 4, FilterConfig(max_covered=0.25)).reason is None
    # An edit that names its one box and its neighbourhood (as gemini-edit does) is read the same way.
    edit = SyntheticImage(good.image, good.boxes, good.class_ids,
                          {"edited_box_index": 0, "neighbourhood": [95.5, 35, 134.2, 85]})
    assert new_box_indices(edit) == [0] and changed_regions(edit) == [[95, 35, 135, 85]]
    assert label_sanity(edit, 4).reason == BOX_COVERED  # box 1 lies under the neighbourhood
    # Half covered is still visible; more than `max_covered` is not.
    half = image([(10, 10, 60, 60), (100, 40, 130, 80)], [0, 1], changed_regions=[[10, 10, 35, 60]])
    assert label_sanity(half, 4, FilterConfig(max_covered=0.5)).reason is None
    assert label_sanity(half, 4, FilterConfig(max_covered=0.4)).reason == BOX_COVERED


def test_perceptual_hash_sees_through_compression_but_not_another_picture():
    a = cv2.resize(pattern(1, 40, 40), (96, 96), interpolation=cv2.INTER_LINEAR)
    recompressed = cv2.imdecode(cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    brighter = np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    other = cv2.resize(pattern(2, 40, 40), (96, 96), interpolation=cv2.INTER_LINEAR)
    h = phash(a)
    assert hamming(h, np.array([phash(recompressed), phash(brighter)], np.uint64)).max() <= 4
    assert hamming(h, np.array([phash(other)], np.uint64))[0] > 16
    assert 0 <= h < 2**64


def test_near_duplicates_by_hash_or_by_embedding():
    rng = np.random.default_rng(0)
    crop = background(5)
    references = NearDuplicates(FilterConfig(dup_hamming=4, dup_cosine=0.99))
    vectors = rng.normal(size=(3, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    references.add(["real:a", "real:b", "real:c"], box_hashes(crop, np.array([[0, 0, 100, 100], [50, 50, 200, 150],
                                                                                [10, 90, 60, 150]])), vectors)
    same_hash = references.check(box_hashes(crop, np.array([[0, 0, 100, 100]])), None)
    assert same_hash.reason == NEAR_DUPLICATE and same_hash.scores["phash_nearest"] == "real:a"
    twin = vectors[1] + 0.01 * rng.normal(size=16).astype(np.float32)
    close = references.check([phash(background(77))], (twin / np.linalg.norm(twin))[None])
    assert close.reason == NEAR_DUPLICATE and close.scores["cosine_nearest"] == "real:b"
    fresh = rng.normal(size=16).astype(np.float32)
    apart = references.check([phash(background(77))], (fresh / np.linalg.norm(fresh))[None])
    assert apart.reason is None and apart.scores["max_cosine"] < 0.99 and apart.scores["phash_min_hamming"] > 4
    # What is kept becomes a reference for the next image.
    references.add(["kept#1/0"], [phash(background(77))], (fresh / np.linalg.norm(fresh))[None])
    assert references.check([phash(background(77))], None).scores["phash_nearest"] == "kept#1/0"


def test_cluster_similarity_keeps_what_is_as_close_as_the_members_are():
    rng = np.random.default_rng(1)
    centre = np.zeros(32, np.float32)
    centre[0] = 1
    members = centre + 0.3 * rng.normal(size=(50, 32)).astype(np.float32)
    members /= np.linalg.norm(members, axis=1, keepdims=True)
    threshold = cluster_threshold(members, members.mean(axis=0), 0.05)
    cosines = members @ (members.mean(axis=0) / np.linalg.norm(members.mean(axis=0)))
    assert (cosines >= threshold).mean() == pytest.approx(0.95, abs=0.02)
    near = cluster_similarity(members[:2], members.mean(axis=0), threshold=-1.0)
    assert near.reason is None and near.scores["cluster_cosine"] > 0.5
    far = np.zeros((1, 32), np.float32)
    far[0, 5] = 1
    outcome = cluster_similarity(far, members.mean(axis=0), threshold)
    assert outcome.reason == OFF_CLUSTER and outcome.scores["cluster_cosine"] < threshold


def test_frechet_distance_agrees_with_scipy_and_with_gaussians_known_in_closed_form():
    from scipy import linalg

    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 8))
    b = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 1.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(mu, 4I) in 8 dimensions: |mu|^2 + 8 * (2 - 1)^2.
    big_a = rng.normal(size=(20000, 8))
    big_b = rng.normal(size=(20000, 8)) * 2.0 + 0.5
    assert frechet_distance(big_a, big_b) == pytest.approx(8 * 0.25 + 8, rel=0.03)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_the_champion_verdict_is_found_confused_or_missed_at_each_intended_box():
    boxes = np.array([[10, 10, 50, 50], [100, 100, 140, 140], [200, 10, 240, 50]], np.float64)
    det = np.array([[11, 11, 50, 50], [101, 100, 141, 139], [100, 100, 140, 140], [400, 400, 420, 420]], np.float64)
    verdicts = champion_verdict(boxes, np.array([1, 1, 1]), det, np.array([1, 0, 1, 1]), np.array([0.6, 0.7, 0.1, 0.9]))
    assert [v["verdict"] for v in verdicts] == ["found", "confused", "missed"]
    assert verdicts[0]["confidence"] == 0.6 and not verdicts[0]["hard"]
    assert verdicts[1]["predicted_class"] == 0 and verdicts[1]["target_confidence"] == 0.1 and verdicts[1]["hard"]
    assert verdicts[2]["predicted_class"] is None and verdicts[2]["hard"]
    assert champion_verdict(boxes[:1], np.array([1]), np.zeros((0, 4)), np.zeros(0), np.zeros(0))[0]["verdict"] == \
        "missed"
