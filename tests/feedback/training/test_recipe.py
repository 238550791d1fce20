"""The rare-aware recipe's pure parts against hand-computed cases: repeat factors, whole repeats, the training
size, the calibration carve and the checkpoint's fitness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback.training.recipe import (
    Recipe, carve_calibration, choose_imgsz, draw_repeats, for_data, rare_box_sides, rare_fitness, repeat_factors,
)
from store.datasets import YoloItem


def item(sha: str, *classes: int, split: str = "train", origin: str = "real", size: tuple[int, int] = (640, 480),
         box: float = 0.05) -> YoloItem:
    label = "".join(f"{c} 0.5 0.5 {box:.6f} {box:.6f}\n" for c in classes)
    return YoloItem(sha, split, ".jpg", label, origin, *size)


def test_repeat_factors_follow_the_lvis_rule_by_hand() -> None:
    # Ten images: helmet (0) in all ten, no_helmet (1) in one of them, vest (2) in five.
    items = [item("a", 0, 1)] + [item(f"b{k}", 0, 2) for k in range(5)] + [item(f"c{k}", 0) for k in range(4)]
    # t = 0.5: f(helmet) = 1 -> max(1, sqrt(0.5)) = 1; f(no_helmet) = 0.1 -> sqrt(5); f(vest) = 0.5 -> 1.
    assert repeat_factors(items, 0.5) == pytest.approx({"a": math.sqrt(5)})
    # t = 1: vest's images repeat too, sqrt(2); the no_helmet image takes its rarest class's sqrt(10).
    factors = repeat_factors(items, 1.0)
    assert factors == pytest.approx({"a": math.sqrt(10), **{f"b{k}": math.sqrt(2) for k in range(5)}})
    with pytest.raises(ValueError, match="t must be > 0"):
        repeat_factors(items, 0)


def test_whole_repeats_round_by_a_seeded_coin() -> None:
    factors = {f"img{k}": 2.25 for k in range(4000)}
    drawn = draw_repeats(factors, seed=0)
    assert set(drawn.values()) == {2, 3}
    assert np.mean(list(drawn.values())) == pytest.approx(2.25, abs=0.03)  # floor + P(extra) = 2 + 0.25
    assert draw_repeats(factors, seed=0) == drawn  # the same seed, the same copies
    assert draw_repeats(dict(reversed(list(factors.items()))), seed=0) == drawn  # whatever the order
    assert draw_repeats(factors, seed=1) != drawn


def test_training_size_makes_the_median_rare_box_big_enough() -> None:
    # 640-wide frames, no_helmet boxes 24 px a side at 320 (48 at 640): 32 px needs 32 / (48 / 640) = 427 -> 448.
    items = [item(f"i{k}", 1, box=48 / 640) for k in range(3)] + [item("h", 0, box=0.5)]
    items = [YoloItem(i.image_sha256, i.split, i.suffix, i.label, i.origin, 640, 640) for i in items]
    sides = rare_box_sides(items, [1])
    assert sides == pytest.approx([48 / 640] * 3)  # the helmet's box is not measured
    assert choose_imgsz(sides, 32, 256, 640) == 448
    assert choose_imgsz(sides, 32, 256, 320) == 320  # the profile's bound wins
    assert choose_imgsz(sides, 8, 256, 640) == 256  # big enough already: the profile's own size
    assert choose_imgsz(np.zeros(0), 32, 256, 640) == 256


def test_calibration_is_carved_from_real_training_images_by_stratum() -> None:
    rare = [item(f"r{k}", 1) for k in range(20)]
    common = [item(f"c{k}", 0) for k in range(80)]
    never = [item("s", 1, origin="synthetic"), item("v", 1, split="val")]
    items = rare + common + never
    carved = carve_calibration(items, [1], 0.25, seed=0)
    assert len(carved & {i.image_sha256 for i in rare}) == 5 and len(carved & {i.image_sha256 for i in common}) == 20
    assert not carved & {"s", "v"}
    assert carve_calibration(items, [1], 0.25, seed=0) == carved and carve_calibration(items, [1], 0.25, 1) != carved
    assert carve_calibration(items, [1], 0.0, seed=0) == set()
    with pytest.raises(ValueError, match="calibration share"):
        carve_calibration(items, [1], 1.0, seed=0)


def test_the_recipe_applies_only_where_a_class_is_rare() -> None:
    assert not for_data(Recipe(), []).active and for_data(Recipe(), []) == Recipe.off()
    on = for_data(Recipe(), [3, 1])
    assert on.active and on.rare_classes == (1, 3) and on.recorded()["rare_classes"] == [1, 3]


def test_rare_fitness_weighs_the_rare_class_as_much_as_the_rest() -> None:
    assert rare_fitness(0.4, [0.2, 0.0]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert rare_fitness(0.4, []) == 0.4  # no rare box to judge on: ultralytics' own fitness
