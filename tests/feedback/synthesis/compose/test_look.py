"""A cluster's measured description becomes the look the offline generators give their objects."""

from __future__ import annotations

import numpy as np

from feedback.synthesis.clusters import attributes_of
from feedback.synthesis.compose.look import Look, apply_look, look_from_attributes


def test_levels_numbers_and_nothing():
    assert look_from_attributes({}) == Look()
    dark = look_from_attributes({"brightness": "dark", "blur": "blurry", "rel_size": 0.05, "position": "edge"})
    assert dark.brightness == (0.35, 0.65) and dark.blur is not None and dark.rel_size == 0.05
    assert dark.position == "edge"
    measured = look_from_attributes({"brightness": {"value": 40}, "blur": 20.0, "size": "small",
                                     "position": "center", "colour": "red"})
    assert measured.target_lightness == 40 / 255 * 100 and measured.blur == (1.2, 2.4)
    assert measured.rel_size == 0.06 and measured.position == "centre"
    assert look_from_attributes({"blur": 500.0}).blur is None  # sharp enough: no blur


def test_mining_descriptions_map_to_the_look_only_where_the_cluster_agrees():
    description = {
        "bins": {"lighting": {"value": "dark", "share": 0.9, "fixed": True},
                 "focus": {"value": "blurry", "share": 0.5, "fixed": False},
                 "position": {"value": "edge", "share": 0.8, "fixed": True}},
        "medians": {"rel_size": 0.045, "brightness": 41.0},
        "class": "no_helmet",
    }
    attributes = attributes_of(description)
    assert attributes["brightness"] == "dark" and attributes["position"] == "edge"
    assert "blur" not in attributes and attributes["rel_size"] == 0.045
    assert attributes["description"] is description
    look = look_from_attributes(attributes)
    assert look.brightness == (0.35, 0.65) and look.blur is None and look.rel_size == 0.045


def test_apply_look_darkens_and_blurs_by_the_drawn_amounts():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    out, applied = apply_look(pixels, Look(brightness=(0.5, 0.5), blur=(1.0, 1.0)), 64.0, np.random.default_rng(1))
    assert applied == {"brightness_factor": 0.5, "blur_sigma": 1.0}
    assert out.mean() < 0.75 * pixels.mean() and out.std() < 0.5 * pixels.std()
    same, nothing = apply_look(pixels, Look(), 64.0, rng)
    assert nothing == {} and np.array_equal(same, pixels)
