"""`swap`: the replaced box holds exactly the donor's object, nothing else changes, and a seed fixes the output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from feedback.synthesis.compose.composite import lab_stats, neighbourhood
from feedback.synthesis.compose.swap import MaterialError, SwapGenerator
from feedback.synthesis.port import SynthesisRequest
from tests.feedback.synthesis.offline_frames import (
    BARE, HELMET, VEST, background, changed_mask, donor, find, frame, recipient,
)


def request(count: int = 1, seed: int = 0, **kw) -> SynthesisRequest:
    return SynthesisRequest(target_class=BARE, count=count, seed=seed, confusable_classes=(HELMET,), **kw)


def test_the_donor_lands_exactly_on_the_replaced_box_and_its_class_changes():
    source, obj = donor()
    target = recipient()
    out = list(SwapGenerator(max_swaps=1).generate(request(), [source, target]))
    assert len(out) == 1
    made = out[0]
    np.testing.assert_array_equal(made.boxes, target.boxes)  # same place, same scale
    assert made.class_ids.tolist() == [BARE, VEST] and made.lineage["new_boxes"] == [0]
    # The donor's object, stretched onto the helmet's 40x40 box, is found there and nowhere else.
    (x, y), score = find(made.image, cv2.resize(obj, (40, 40), interpolation=cv2.INTER_LINEAR))
    assert (x, y) == (60, 50) and score > 0.95
    edit = made.lineage["edits"][0]
    assert edit["donor_image"] == "donor1" and edit["donor_box"] == [20, 30, 50, 70] and edit["from_class"] == HELMET
    assert edit["scale"] == [pytest.approx(4 / 3, abs=1e-3), 1.0]


def test_pixels_outside_the_changed_region_are_untouched():
    source, _ = donor()
    target = recipient()
    made = next(iter(SwapGenerator().generate(request(), [source, target])))
    mask = changed_mask(target.image.shape, made.lineage["changed_regions"])
    assert mask.sum() < 0.2 * mask.size
    np.testing.assert_array_equal(made.image[~mask], target.image[~mask])
    # The helmet is gone: no yellow helmet pixel is left inside its box.
    helmet = np.all(made.image[50:90, 60:100] == (0, 215, 255), axis=2)
    assert helmet.sum() == 0
    assert target.image.base is None or not np.shares_memory(made.image, target.image)  # the material stays as it was
    assert np.all(target.image[50:90, 60:100] == (0, 215, 255))


def crowd(seed: int) -> tuple[list, int]:
    """Three donors and a frame with three helmets far apart: nine (helmet, donor) pairs."""
    image = background(300 + seed, 200, 320)
    boxes = [(20, 20, 60, 60), (140, 30, 180, 70), (250, 120, 290, 160)]
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = (0, 215, 255)
    return [donor(1)[0], donor(3, (10, 10, 42, 50))[0], donor(4, (30, 20, 66, 60))[0],
            frame(f"crowd{seed}", image, boxes, [HELMET] * 3)], 3


def test_a_seed_fixes_the_output_and_another_seed_changes_it():
    material, _ = crowd(0)
    a = list(SwapGenerator(max_swaps=1).generate(request(count=5, seed=5), material))
    b = list(SwapGenerator(max_swaps=1).generate(request(count=5, seed=5), material))
    c = list(SwapGenerator(max_swaps=1).generate(request(count=5, seed=6), material))
    assert len(a) == len(b) == len(c) == 5
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        assert x.lineage == y.lineage
    assert [x.lineage["edits"] for x in a] != [z.lineage["edits"] for z in c]
    # No (instance, donor) pair repeats: the same object at the same place would be a duplicate.
    pairs = [(e["box_index"], e["donor_image"]) for x in a for e in x.lineage["edits"]]
    assert len(pairs) == len(set(pairs))


def test_it_stops_when_every_helmet_has_had_every_fitting_donor():
    source, _ = donor()
    assert len(list(SwapGenerator().generate(request(count=3), [source, recipient()]))) == 1


def test_several_swaps_in_one_frame_never_overlap():
    material, _ = crowd(1)
    made = list(SwapGenerator(max_swaps=3).generate(request(count=6, seed=2), material))
    assert any(len(m.lineage["new_boxes"]) > 1 for m in made)
    for m in made:
        new = m.lineage["new_boxes"]
        assert [int(c) for c in m.class_ids[new]] == [BARE] * len(new)
        assert all(int(c) == HELMET for i, c in enumerate(m.class_ids) if i not in new)
        masks = [changed_mask(m.image.shape, [r]) for r in m.lineage["changed_regions"]]
        assert sum(mk.sum() for mk in masks) == np.logical_or.reduce(masks).sum()  # disjoint patches


def test_colour_matching_moves_the_object_towards_the_place_it_lands_in():
    source, _ = donor()
    dark = recipient()
    dark = frame(dark.image_sha256, (dark.image * 0.35).astype(np.uint8), list(map(tuple, dark.boxes)),
                 dark.class_ids.tolist())
    matched = next(iter(SwapGenerator().generate(request(), [source, dark])))
    raw = next(iter(SwapGenerator(colour_match=False).generate(request(), [source, dark])))
    place = lab_stats(neighbourhood(dark.image, (60, 50, 100, 90)))[0][0]
    lightness = [lab_stats(x.image[50:90, 60:100])[0][0] for x in (matched, raw)]
    assert abs(lightness[0] - place) < 0.5 * abs(lightness[1] - place)


def test_a_dark_cluster_darkens_the_swapped_object():
    source, _ = donor()
    target = recipient()
    plain = next(iter(SwapGenerator().generate(request(), [source, target])))
    dark = next(iter(SwapGenerator().generate(request(attributes={"brightness": "dark"}), [source, target])))
    assert lab_stats(dark.image[50:90, 60:100])[0][0] < 0.7 * lab_stats(plain.image[50:90, 60:100])[0][0]
    assert 0.35 <= dark.lineage["edits"][0]["brightness_factor"] <= 0.65


def test_what_swap_refuses():
    source, _ = donor()
    target = recipient()
    with pytest.raises(MaterialError, match="confusable"):
        next(iter(SwapGenerator().generate(SynthesisRequest(target_class=BARE, count=1), [source, target])))
    with pytest.raises(MaterialError, match="no verified box of class 1"):
        next(iter(SwapGenerator().generate(request(), [target])))
    narrow = frame("narrow", source.image, [(20, 30, 30, 70)], [BARE])  # 10x40 onto 40x40: aspect x4
    with pytest.raises(MaterialError, match="fits"):
        next(iter(SwapGenerator().generate(request(), [narrow, target])))
    # A verified box inside the helmet's patch would be painted over: that helmet is not replaceable.
    hidden = frame("hidden", target.image, [(60, 50, 100, 90), (101, 60, 104, 64)], [HELMET, VEST])
    with pytest.raises(MaterialError, match="fits"):
        next(iter(SwapGenerator().generate(request(), [source, hidden])))
    # The worker whose head it is may be covered as much as it takes: it is the same object.
    worker = frame("worker", target.image, [(60, 50, 100, 90), (55, 45, 110, 155)], [HELMET, VEST])
    made = next(iter(SwapGenerator().generate(request(), [source, worker])))
    assert made.class_ids.tolist() == [BARE, VEST]
