"""Tests for hard-example mining: each trigger, the hourly budget, dedup, and the operator's bypass."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import supervision as sv

from edge.thinning import dhash, hamming
from edge.triggers import Decision, HardExampleMiner, TriggerConfig, class_rare_band, class_uncertainty_band

# Every trigger off except the one under test; a huge budget and no dedup unless asked.
QUIET = dict(
    uncertainty_enabled=False,
    flicker_enabled=False,
    operator_enabled=False,
    random_enabled=False,
    budget_per_hour=1e9,
    budget_burst=1_000_000,
    dedup_memory=0,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scene(seed: int, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A frame with structure (rectangles on a gradient), unique per seed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.tile(np.linspace(40, 200, w, dtype=np.float32), (h, 1))
    img = cv2.merge([img, img[:, ::-1], np.full_like(img, 90)])
    for _ in range(12):
        x1, y1 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x2, y2 = x1 + int(rng.integers(20, 120)), y1 + int(rng.integers(20, 120))
        cv2.rectangle(img, (x1, y1), (x2, y2), [float(c) for c in rng.integers(0, 256, 3)], -1)
    return img.clip(0, 255).astype(np.uint8)


def noisy(frame: np.ndarray, sigma: float = 8.0, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, frame.shape)
    return (frame.astype(np.float32) + noise).clip(0, 255).astype(np.uint8)


def dets(*items: tuple[int, int, float], box: tuple[float, float, float, float] = (10, 10, 60, 60)) -> sv.Detections:
    """Detections from (tracker_id, class_id, confidence) triples; -1 = no confirmed track."""
    n = len(items)
    if n == 0:
        empty = sv.Detections.empty()
        empty.tracker_id = np.array([], dtype=int)
        return empty
    names = ["person", "car", "truck"]
    return sv.Detections(
        xyxy=np.array([box] * n, dtype=float),
        confidence=np.array([c for _, _, c in items]),
        class_id=np.array([k for _, k, _ in items]),
        tracker_id=np.array([t for t, _, _ in items]),
        data={"class_name": np.array([names[k] for _, k, _ in items])},
    )


def run(miner: HardExampleMiner, frames: list[sv.Detections]) -> dict[int, Decision]:
    """Observes each frame (image = a flat grey level equal to its index) and collects decisions."""
    out = {}
    for index, detections in enumerate(frames):
        image = np.full((8, 8, 3), index % 256, dtype=np.uint8)
        if (decision := miner.observe(image, detections, index)) is not None:
            out[index] = decision
    return out


def test_uncertainty_fires_only_inside_the_band() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "uncertainty_enabled": True}))
    confidences = [0.1, 0.24, 0.25, 0.4, 0.59, 0.6, 0.9]
    decisions = run(miner, [dets((-1, 0, c)) for c in confidences])
    assert sorted(decisions) == [2, 3, 4]  # [0.25, 0.6): closed below, open above
    assert all(d.triggers == ["uncertainty"] and d.priority == 2 for d in decisions.values())
    assert "person 0.40" in decisions[3].reasons[0]
    assert miner.stats()["fired"]["uncertainty"] == 3


def test_a_short_lived_track_is_flicker_and_its_last_frame_is_uploaded() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "flicker_enabled": True}))
    frames = [dets((7, 0, 0.9))] * 3 + [dets()] * 3
    decisions = run(miner, frames)
    assert list(decisions) == [3]  # known on the first frame without it...
    decision = decisions[3]
    assert decision.triggers == ["flicker"]
    assert decision.frame_index == 2 and decision.frame_bgr[0, 0, 0] == 2  # ...but the frame that shows it goes up
    assert decision.detections.tracker_id.tolist() == [7]
    assert "track 7 person lived 3 frames" in decision.reasons[0]


def test_a_class_change_is_flicker_once_per_track() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "flicker_enabled": True}))
    frames = [dets((4, 1, 0.9))] * 10 + [dets((4, 2, 0.9)), dets((4, 1, 0.9))] * 5
    decisions = run(miner, frames)
    assert list(decisions) == [10]  # the frame that shows the new class; the oscillation after it is the same story
    assert "track 4 car -> truck" in decisions[10].reasons[0]


def test_stable_tracks_and_barely_seen_ones_are_not_flicker() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "flicker_enabled": True}))
    stable = [dets((1, 0, 0.9))] * 50 + [dets()] * 3  # lived 50 frames, then left
    barely = [dets((2, 0, 0.9))] * 2 + [dets()] * 3  # 2 hits < flicker_min_hits
    assert run(miner, stable) == {}
    assert run(miner, barely) == {}
    assert miner.stats()["fired"]["flicker"] == 0


def test_random_sample_matches_its_rate_and_is_deterministic_per_seed() -> None:
    config = TriggerConfig(**{**QUIET, "random_enabled": True, "random_rate": 0.05})
    frames = [dets()] * 20_000
    first = run(HardExampleMiner(config, seed=3), frames)
    again = run(HardExampleMiner(config, seed=3), frames)
    other = run(HardExampleMiner(config, seed=4), frames)
    assert abs(len(first) - 1_000) < 130  # 4 standard deviations of a binomial(20000, 0.05)
    assert list(first) == list(again) and list(first) != list(other)
    assert all(d.triggers == ["random"] and d.priority == 1 for d in first.values())


def test_budget_caps_uploads_per_hour_and_refills_continuously() -> None:
    clock = FakeClock()
    config = TriggerConfig(**{**QUIET, "uncertainty_enabled": True, "budget_per_hour": 120, "budget_burst": 5})
    miner = HardExampleMiner(config, clock=clock)
    unsure = dets((-1, 0, 0.4))
    image = np.zeros((8, 8, 3), np.uint8)
    per_hour = []
    index = 0
    for _hour in range(3):  # one unsure frame per second for three hours
        sent = 0
        for _ in range(3600):
            sent += miner.observe(image, unsure, index) is not None
            clock.now += 1.0
            index += 1
        per_hour.append(sent)
    assert per_hour[0] <= 120 + 5 and per_hour[1] <= 120 and per_hour[2] <= 120
    assert sum(per_hour) >= 3 * 120 - 2
    assert miner.stats()["suppressed_by_budget"] == 3 * 3600 - sum(per_hour)



def test_budget_allows_a_burst_then_one_upload_per_refill_interval() -> None:
    clock = FakeClock()
    config = TriggerConfig(**{**QUIET, "uncertainty_enabled": True, "budget_per_hour": 120, "budget_burst": 5})
    miner = HardExampleMiner(config, clock=clock)
    unsure, image = dets((-1, 0, 0.4)), np.zeros((8, 8, 3), np.uint8)
    sent = [miner.observe(image, unsure, i) is not None for i in range(8)]
    assert sent == [True] * 5 + [False] * 3  # the burst, then empty
    clock.now += 29.0  # 120 an hour is one every 30 s
    assert miner.observe(image, unsure, 8) is None
    clock.now += 1.5
    assert miner.observe(image, unsure, 9) is not None
    assert miner.observe(image, unsure, 10) is None
    clock.now += 3600.0  # a long quiet spell refills the burst, no more
    assert sum(miner.observe(image, unsure, 11 + i) is not None for i in range(10)) == 5


def test_the_same_scene_is_suppressed_as_duplicate_and_another_scene_is_not() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "uncertainty_enabled": True, "dedup_memory": 256}))
    unsure = dets((-1, 0, 0.4))
    street, yard = scene(1), scene(2)
    assert miner.observe(street, unsure, 0) is not None
    assert miner.observe(street.copy(), unsure, 1) is None
    assert miner.observe(noisy(street), unsure, 2) is None
    assert miner.observe(yard, unsure, 3) is not None
    stats = miner.stats()
    assert stats["suppressed_as_duplicate"] == 2 and stats["uploaded"] == 2


def test_dhash_is_robust_to_noise_and_tells_scenes_apart() -> None:
    street = scene(1)
    assert hamming(dhash(street), dhash(noisy(street, sigma=12))) <= 6
    assert all(hamming(dhash(street), dhash(scene(s))) > 6 for s in range(2, 12))
    dark = np.full((240, 320, 3), 12, np.uint8)  # a flat night frame hashes the same despite sensor noise
    assert dhash(dark) == dhash(noisy(dark, sigma=3))


def test_an_operator_flag_bypasses_budget_and_dedup() -> None:
    config = TriggerConfig(
        **{**QUIET, "uncertainty_enabled": True, "operator_enabled": True, "budget_per_hour": 0, "dedup_memory": 256}
    )
    miner = HardExampleMiner(config)
    street = scene(1)
    unsure = dets((-1, 0, 0.4))
    assert miner.observe(street, unsure, 0) is None  # no budget at all
    assert miner.stats()["suppressed_by_budget"] == 1

    miner.flag("helmet missed")
    decision = miner.observe(street, unsure, 1)
    assert decision is not None
    assert decision.triggers == ["operator", "uncertainty"] and decision.priority == 3
    assert decision.note == "helmet missed" and decision.frame_index == 1

    miner.flag()
    assert miner.observe(street, dets(), 2) is not None  # the same scene again: a person asked
    assert miner.observe(street, dets(), 3) is None  # a flag is for one frame only
    assert miner.stats()["fired"]["operator"] == 2


def test_flags_from_many_threads_collapse_into_one_upload() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "operator_enabled": True}))
    threads = [threading.Thread(target=miner.flag) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(run(miner, [dets()] * 3)) == 1


def test_previous_frame_flicker_wins_a_tie_with_current_uncertainty() -> None:
    config = TriggerConfig(**{**QUIET, "flicker_enabled": True, "uncertainty_enabled": True})
    miner = HardExampleMiner(config)
    frames = [dets((3, 0, 0.9))] * 3 + [dets((-1, 0, 0.4))]
    decisions = run(miner, frames)
    assert list(decisions) == [3] and decisions[3].triggers == ["flicker"] and decisions[3].frame_index == 2
    assert miner.stats()["superseded"] == 1


# -- rare_class: a watched class the model almost saw ---------------------------------------------

PPE = {0: "helmet", 1: "no_helmet", 2: "no_wear", 3: "wear"}
RARE = dict(**QUIET, watch_classes=(1,), rare_band=(0.001, 0.25))


def seen(*evidence: float, boxes: sv.Detections | None = None) -> sv.Detections:
    """A frame's detections (none by default) carrying its per-class evidence, as `decode` gives them."""
    frame = boxes if boxes is not None else dets()
    frame.metadata["class_evidence"] = np.array(evidence, dtype=np.float32)
    return frame


def test_rare_class_fires_inside_the_band_and_names_the_class_and_its_evidence() -> None:
    miner = HardExampleMiner(TriggerConfig(**RARE), names=PPE)
    decision = miner.observe(np.zeros((8, 8, 3), np.uint8), seen(0.9, 0.0081, 0.3, 0.0), 0)
    assert decision is not None and decision.triggers == ["rare_class"] and decision.priority == 2
    assert decision.reasons == ["rare_class: evidence in [0.001, 0.25): no_helmet 0.0081"]
    assert miner.stats()["fired"]["rare_class"] == 1


def test_rare_class_band_is_low_inclusive_high_exclusive_and_watches_only_its_classes() -> None:
    evidence_of_no_helmet = [0.0009, 0.001, 0.1, 0.2499, 0.25, 0.6]
    frames = [seen(0.5, e, 0.5, 0.5) for e in evidence_of_no_helmet]
    frames.append(seen(0.5, 0.0, 0.1, 0.1))  # unwatched classes in the band: nothing
    frames.append(dets())  # no evidence at all (a detector that does not report it): nothing
    fired = run(HardExampleMiner(TriggerConfig(**RARE), names=PPE), frames)
    assert sorted(fired) == [1, 2, 3]


def test_rare_class_with_several_watched_classes_lists_each_in_its_band() -> None:
    config = TriggerConfig(**{**RARE, "watch_classes": (1, 2, 7), "rare_band": (0.01, 0.2)})  # 7: not in the model
    decision = HardExampleMiner(config).observe(np.zeros((8, 8, 3), np.uint8), seen(0.0, 0.05, 0.15, 0.05), 0)
    assert decision is not None
    assert decision.reasons == ["rare_class: evidence in [0.01, 0.2): class 1 0.05, class 2 0.15"]


def test_rare_class_joins_the_other_triggers_on_one_frame() -> None:
    config = TriggerConfig(**{**RARE, "uncertainty_enabled": True})
    decision = HardExampleMiner(config, names=PPE).observe(
        np.zeros((8, 8, 3), np.uint8), seen(0.4, 0.02, 0.0, 0.0, boxes=dets((-1, 0, 0.4))), 0
    )
    assert decision is not None and decision.triggers == ["uncertainty", "rare_class"]


def test_rare_class_is_off_without_watched_classes() -> None:
    assert run(HardExampleMiner(TriggerConfig(**QUIET)), [seen(0.5, 0.01)] * 5) == {}


def test_rare_class_spends_the_budget_and_is_deduplicated() -> None:
    clock = FakeClock()
    config = TriggerConfig(**{**RARE, "budget_per_hour": 120, "budget_burst": 3, "dedup_memory": 256})
    miner = HardExampleMiner(config, clock=clock, names=PPE)
    almost = seen(0.9, 0.02, 0.0, 0.0)
    sent = [miner.observe(scene(i), almost, i) is not None for i in range(5)]
    assert sent == [True] * 3 + [False] * 2  # the burst, then empty
    clock.now += 30.5  # 120 an hour is one every 30 s
    assert miner.observe(scene(0), almost, 5) is None  # an uploaded scene again: a duplicate, free
    assert miner.observe(scene(5), almost, 6) is not None
    stats = miner.stats()
    assert stats["suppressed_by_budget"] == 2 and stats["suppressed_as_duplicate"] == 1 and stats["uploaded"] == 4


def test_faint_evidence_everywhere_fires_only_where_it_ranks_in_the_top_share_of_recent_frames() -> None:
    # A model that never predicts the class: every frame's evidence is faint and in the band.
    values = np.random.default_rng(0).uniform(0.001, 0.02, 2000)
    frames = [seen(0.5, float(v), 0.0, 0.0) for v in values]
    window, top = 300, 0.05
    fired = run(HardExampleMiner(TriggerConfig(**RARE, rare_top=top, rare_window=window), names=PPE), frames)
    # Worked out afresh from the values: the share of the window (this frame and up to window-1 before it) above.
    expected = {i for i, v in enumerate(values) if (values[max(0, i - window + 1):i + 1] > v).mean() <= top}
    assert set(fired) == expected
    assert 0.04 < len(fired) / len(values) < 0.1  # near the top share, against every frame with the band alone
    assert len(run(HardExampleMiner(TriggerConfig(**RARE, rare_top=1.0), names=PPE), frames)) == len(values)


def test_the_ranking_forgets_frames_older_than_its_window() -> None:
    frames = [seen(0.5, 0.2, 0.0, 0.0)] * 10 + [seen(0.5, 0.01, 0.0, 0.0)] * 15
    fired = run(HardExampleMiner(TriggerConfig(**RARE, rare_top=0.1, rare_window=10), names=PPE), frames)
    # Ties rank together, so a steady 0.2 fires throughout; 0.01 fires again once at most one 0.2 is left in view.
    assert sorted(fired) == [*range(10), *range(18, 25)]  # frame 18 still sees frame 9


@pytest.mark.parametrize(("top", "window"), [(0.0, 10), (1.5, 10), (0.05, 0)])
def test_a_rare_top_or_window_out_of_range_is_refused_naming_it(top: float, window: int) -> None:
    with pytest.raises(ValueError, match=r"rare_top .* must lie in \(0, 1\] and rare_window"):
        TriggerConfig(rare_top=top, rare_window=window)


@pytest.mark.parametrize("band", [(0.25, 0.25), (0.3, 0.2), (-0.1, 0.2), (0.1, 1.5)])
def test_a_rare_band_out_of_order_or_range_is_refused_naming_it(band: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match=r"rare_band .* must satisfy 0 <= low < high <= 1"):
        TriggerConfig(rare_band=band)


def test_negative_watch_classes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"watch_classes .* \[-1\]"):
        TriggerConfig(watch_classes=(1, -1))


# -- per-class operating points: bands placed at a class's own threshold -----------------------------


def test_a_class_with_its_own_threshold_has_its_uncertainty_band_start_there() -> None:
    # person's threshold is 0.5: its band is [0.5, 0.85), as wide as the default [0.25, 0.6); car has none.
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "uncertainty_enabled": True}), thresholds={0: 0.5})
    assert miner.uncertainty_band_of(0) == (0.5, 0.85) and miner.uncertainty_band_of(1) == (0.25, 0.6)
    frames = [dets((-1, 0, 0.7)), dets((-1, 0, 0.9)), dets((-1, 1, 0.3)), dets((-1, 1, 0.7))]
    decisions = run(miner, frames)
    assert sorted(decisions) == [0, 2]  # person 0.7 is unsure at its own operating point; car 0.7 is not
    assert decisions[0].reasons == ["uncertainty: 1 detection(s) in each class's band: person 0.70 in [0.5, 0.85)"]
    assert decisions[2].reasons == ["uncertainty: 1 detection(s) in each class's band: car 0.30 in [0.25, 0.6)"]
    assert class_uncertainty_band((0.25, 0.6), 0.9) == (0.9, 1.0)  # no further than 1


def test_uncertainty_bands_follow_the_running_models_thresholds_and_revert_without_them() -> None:
    miner = HardExampleMiner(TriggerConfig(**{**QUIET, "uncertainty_enabled": True}))
    person_at = dets((-1, 0, 0.7))
    assert miner.observe(scene(0), person_at, 0) is None  # the default band ends at 0.6
    miner.set_thresholds({0: 0.5})  # a model with person at 0.5 swapped in
    assert miner.observe(scene(1), person_at, 1) is not None
    miner.set_thresholds({})  # and one without thresholds
    assert miner.observe(scene(2), person_at, 2) is None
    fixed = HardExampleMiner(TriggerConfig(**{**QUIET, "uncertainty_enabled": True, "uncertainty_band_per_class": False}),
                             thresholds={0: 0.5})
    assert fixed.uncertainty_band_of(0) == (0.25, 0.6) and fixed.observe(scene(3), person_at, 3) is None


def test_a_watched_class_with_its_own_threshold_has_its_rare_band_end_there() -> None:
    # no_helmet's threshold is 0.08: evidence of 0.1 already gave it a box, 0.05 is "almost".
    miner = HardExampleMiner(TriggerConfig(**RARE, rare_top=1.0), names=PPE, thresholds={1: 0.08})
    assert miner.rare_band_of(1) == (0.001, 0.08) == class_rare_band((0.001, 0.25), 0.08)
    fired = run(miner, [seen(0.5, 0.1, 0.0, 0.0), seen(0.5, 0.05, 0.0, 0.0), seen(0.5, 0.0005, 0.0, 0.0)])
    assert sorted(fired) == [1]
    assert fired[1].reasons == ["rare_class: evidence in each class's band: no_helmet 0.05 in [0.001, 0.08)"]
    # A band set explicitly (--rare-band) wins over the model's thresholds: 0.1 is in [0.001, 0.25).
    explicit = HardExampleMiner(TriggerConfig(**RARE, rare_top=1.0, rare_band_per_class=False), names=PPE,
                                thresholds={1: 0.08})
    assert explicit.rare_band_of(1) == (0.001, 0.25)
    assert sorted(run(explicit, [seen(0.5, 0.1, 0.0, 0.0), seen(0.5, 0.05, 0.0, 0.0)])) == [0, 1]
    # A threshold at or under the band's low end leaves no evidence that is "almost" a box.
    under = HardExampleMiner(TriggerConfig(**RARE, rare_top=1.0), names=PPE, thresholds={1: 0.001})
    assert run(under, [seen(0.5, 0.0009, 0.0, 0.0), seen(0.5, 0.0011, 0.0, 0.0)]) == {}
