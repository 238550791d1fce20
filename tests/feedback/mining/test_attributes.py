"""Measured attributes of failure crops, on images whose light, blur, colours and boxes are known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from feedback.mining.attributes import bins, describe, measure, named_colours, summarise

NONE = np.zeros((0, 4))


def frame(value: int = 120, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def checker(value: int = 120) -> np.ndarray:
    """A frame of 4 px squares around `value`: full of edges, so sharp."""
    ys, xs = np.mgrid[:240, :320]
    pattern = (((ys // 4) + (xs // 4)) % 2 * 80 - 40 + value).astype(np.uint8)
    return np.repeat(pattern[..., None], 3, axis=2)


@pytest.mark.parametrize(("value", "word"), [(20, "dark"), (120, "normal"), (235, "bright")])
def test_lighting_follows_the_crops_brightness(value, word):
    a = measure(frame(value), (100, 100, 140, 140), NONE)
    assert a["brightness"] == pytest.approx(value)
    assert bins(a)["lighting"] == word


def test_blur_is_the_variance_of_the_laplacian_and_a_defocused_crop_is_blurry():
    sharp = checker()
    soft = cv2.GaussianBlur(sharp, (0, 0), 4)
    a, b = measure(sharp, (100, 80, 180, 160), NONE), measure(soft, (100, 80, 180, 160), NONE)
    assert a["blur"] > 20 * b["blur"]
    assert (bins(a)["focus"], bins(b)["focus"]) == ("sharp", "blurry")
    assert a["contrast"] == pytest.approx(40, abs=2) and bins(a)["contrast"] == "normal"
    assert bins(b)["contrast"] == "low"


def test_size_position_and_shape_come_from_the_box_and_the_frame():
    small = measure(frame(), (150, 110, 160, 120), NONE)  # 10 px in 320x240
    large = measure(frame(), (60, 20, 260, 220), NONE)
    edge = measure(frame(), (0, 100, 30, 140), NONE)
    tall = measure(frame(), (150, 60, 170, 180), NONE)
    assert small["rel_size"] == pytest.approx(np.sqrt(100 / (320 * 240)))
    assert [bins(a)["size"] for a in (small, large, tall)] == ["small", "large", "medium"]
    assert (bins(small)["position"], bins(edge)["position"]) == ("centre", "edge") and edge["truncated"]
    assert (bins(tall)["shape"], bins(small)["shape"]) == ("tall", "square")


def test_crowding_counts_other_verified_boxes_never_the_failures_own():
    box = (100, 100, 140, 140)
    alone = measure(frame(), box, np.array([box], float))  # its own verified box
    hidden = measure(frame(), box, np.array([box, (120, 90, 170, 150)], float))
    crowd = measure(frame(), box, np.array([(150, 100, 170, 120), (80, 140, 95, 160), (145, 60, 160, 90),
                                            (60, 100, 90, 130)], float))
    assert (alone["overlap"], alone["neighbours"]) == (0.0, 0.0) and bins(alone)["crowding"] == "isolated"
    assert hidden["overlap"] == pytest.approx(0.5) and bins(hidden)["crowding"] == "occluded"
    assert crowd["neighbours"] == 4 and bins(crowd)["crowding"] == "crowded"


def test_named_colours():
    patch = np.zeros((20, 40, 3), np.uint8)
    patch[:, :20] = (0, 215, 255)  # hard-hat yellow, BGR
    patch[:, 20:] = (200, 60, 20)  # blue
    assert sorted(named_colours(patch)) == ["blue", "yellow"]
    assert named_colours(np.full((8, 8, 3), 250, np.uint8)) == ["white"]
    assert named_colours(np.full((8, 8, 3), 10, np.uint8)) == ["black"]
    image = frame()
    image[100:140, 100:140] = (0, 215, 255)
    assert measure(image, (100, 100, 140, 140), NONE)["colours"] == ["yellow"]  # inside the box only


def test_an_unreadable_image_leaves_pixels_unknown_but_the_box_measured():
    a = measure(None, (0, 0, 32, 24), NONE, frame_size=(320, 240))
    assert np.isnan(a["brightness"]) and a["colours"] == [] and a["rel_size"] == pytest.approx(0.1)
    b = bins(a)
    assert b["lighting"] is None and b["focus"] is None and b["size"] == "medium" and b["position"] == "edge"
    unknown = measure(None, (0, 0, 32, 24), NONE)
    assert np.isnan(unknown["rel_size"]) and bins(unknown)["position"] is None and bins(unknown)["size"] is None


def test_summaries_say_what_most_members_share():
    assert summarise(["dark"] * 7 + ["normal"] * 3) == {"value": "dark", "share": 0.7, "fixed": True}
    assert summarise(["dark"] * 6 + ["normal"] * 4)["fixed"] is False
    assert summarise(["b", "a", None, None]) == {"value": "a", "share": 0.25, "fixed": False}  # ties: by name
    assert summarise([None]) == {"value": None, "share": 0.0, "fixed": False}
    dark = [measure(frame(20), (100, 100, 140, 140), NONE) for _ in range(3)]
    lit = measure(frame(120), (100, 100, 140, 140), NONE)
    d = describe([*dark, lit], {"camera": ["a", "a", "a", "b"]})
    assert d["bins"]["lighting"] == {"value": "dark", "share": 0.75, "fixed": True}
    assert d["medians"]["brightness"] == pytest.approx(20) and d["camera"]["value"] == "a"
    assert [c["name"] for c in d["colours"]] == ["black"]
