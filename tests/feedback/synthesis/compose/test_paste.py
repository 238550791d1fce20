"""`paste`: the new box holds exactly the donor's object, clear of verified boxes, whose labels carry over."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from feedback.synthesis.compose.composite import lab_stats
from feedback.synthesis.compose.paste import NO_PLACE, PasteGenerator
from feedback.synthesis.compose.swap import MaterialError
from feedback.synthesis.port import Rejected, SynthesisRequest
from tests.feedback.synthesis.offline_frames import BARE, HELMET, VEST, background, changed_mask, donor, find, frame

EXACT = {"rel_size_spread": 1e-9}  # no size jitter: the pasted size is known in advance


def request(count: int = 1, seed: int = 0, **attributes) -> SynthesisRequest:
    return SynthesisRequest(target_class=BARE, count=count, seed=seed, attributes=attributes)


def scene(seed: int = 0) -> tuple:
    """A donor and a large labelled background with a helmet and a vest."""
    source, obj = donor()
    image = background(400 + seed, 240, 320)
    image[40:80, 40:80] = (0, 215, 255)
    image[150:220, 220:290] = (0, 110, 255)
    bg = frame(f"bg{seed}", image, [(40, 40, 80, 80), (220, 150, 290, 220)], [HELMET, VEST])
    return source, obj, bg


def test_the_pasted_object_is_found_exactly_at_its_new_box_and_old_labels_carry_over():
    source, obj, bg = scene()
    made = [m for m in PasteGenerator().generate(request(count=6, seed=1), [bg, source])
            if m.lineage["source_image"] == "bg0"]
    assert made
    for m in made:
        n = len(bg.boxes)
        np.testing.assert_array_equal(m.boxes[:n], bg.boxes)
        assert m.class_ids.tolist() == [HELMET, VEST, BARE] and m.lineage["new_boxes"] == [2]
        x1, y1, x2, y2 = m.boxes[2]
        w, h = x2 - x1, y2 - y1
        assert w / h == pytest.approx(30 / 40, rel=1e-9)  # the donor keeps its aspect ratio
        # Where the box is whole pixels apart, resize the object to it and find it at the box's corner.
        tpl = cv2.resize(obj, (int(round(w)), int(round(h))), interpolation=cv2.INTER_AREA if w < 30 else
                         cv2.INTER_LINEAR)
        (fx, fy), score = find(m.image, tpl)
        assert abs(fx - x1) <= 1 and abs(fy - y1) <= 1 and score > 0.9


def test_patches_avoid_verified_boxes_and_leave_every_other_pixel_alone():
    source, _, bg = scene()
    made = [m for m in PasteGenerator(max_objects=3).generate(request(count=8, seed=2), [bg]
                                                                  + [source]) if not isinstance(m, Rejected)]
    assert made
    for m in made:
        frame_of = bg if m.lineage["source_image"] == "bg0" else source
        mask = changed_mask(frame_of.image.shape, m.lineage["changed_regions"])
        np.testing.assert_array_equal(m.image[~mask], frame_of.image[~mask])
        for x1, y1, x2, y2 in frame_of.boxes:  # no verified box has a changed pixel
            assert not mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].any()


def test_size_and_place_follow_the_cluster():
    source, _, bg = scene()
    small = next(m for m in PasteGenerator().generate(request(count=4, seed=3, rel_size=0.1, **EXACT), [bg, source])
                 if m.lineage["source_image"] == "bg0")
    x1, y1, x2, y2 = small.boxes[-1]
    assert np.sqrt((x2 - x1) * (y2 - y1) / (320 * 240)) == pytest.approx(0.1, rel=1e-6)
    centres = []
    for m in PasteGenerator().generate(request(count=12, seed=4, rel_size=0.08, position="centre", **EXACT),
                                       [bg, source]):
        if not isinstance(m, Rejected):
            x1, y1, x2, y2 = m.boxes[-1]
            h, w = m.image.shape[:2]
            centres.append(((x1 + x2) / 2 / w, (y1 + y2) / 2 / h))
    assert centres and all(0.3 <= cx <= 0.7 and 0.3 <= cy <= 0.7 for cx, cy in centres)


def test_dark_and_blurry_clusters_change_the_object_only():
    source, _, bg = scene()
    plain = next(iter(PasteGenerator().generate(request(seed=5), [bg, source])))
    dark = next(iter(PasteGenerator().generate(request(seed=5, brightness="dark"), [bg, source])))
    blurry = next(iter(PasteGenerator().generate(request(seed=5, blur="blurry"), [bg, source])))
    np.testing.assert_array_equal(plain.boxes, dark.boxes)  # the look is drawn after the place
    np.testing.assert_array_equal(plain.boxes, blurry.boxes)
    x1, y1 = (int(np.ceil(v)) for v in plain.boxes[-1][:2])
    x2, y2 = (int(v) for v in plain.boxes[-1][2:])

    def inside(m):  # noqa: ANN001, ANN202
        return m.image[y1:y2, x1:x2]

    assert lab_stats(inside(dark))[0][0] < 0.7 * lab_stats(inside(plain))[0][0]
    sharpness = [cv2.Laplacian(cv2.cvtColor(inside(m), cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for m in (plain, blurry)]
    assert sharpness[1] < 0.5 * sharpness[0]
    outside = ~changed_mask(plain.image.shape, plain.lineage["changed_regions"])
    np.testing.assert_array_equal(dark.image[outside], plain.image[outside])
    np.testing.assert_array_equal(blurry.image[outside], plain.image[outside])


def test_a_frame_with_no_room_is_rejected_with_its_reason_and_no_donor_is_an_error():
    source, _, _ = scene()
    # Both frames are covered by verified boxes: there is nowhere to put an object without hiding one.
    h, w = source.image.shape[:2]
    crowded = frame("crowded", source.image, [tuple(source.boxes[0]), (50, 0, w, h), (0, 70, 50, h), (0, 0, 20, 30)],
                    [BARE, VEST, VEST, VEST])
    full = frame("full", background(9, 120, 120), [(0, 0, 60, 60), (60, 0, 120, 60), (0, 60, 60, 120),
                                                    (60, 60, 120, 120)], [VEST] * 4)
    out = list(PasteGenerator(attempts=10).generate(request(count=3), [full, crowded]))
    assert len(out) == 3 and all(isinstance(o, Rejected) and o.reason == NO_PLACE for o in out)
    assert {o.lineage["source_image"] for o in out} <= {"full", "crowded"}
    with pytest.raises(MaterialError, match="no verified box of class 1"):
        next(iter(PasteGenerator().generate(request(), [full])))


def test_the_same_seed_makes_the_same_images_and_another_seed_others():
    source, _, bg = scene()

    def made(seed: int) -> list:
        return [m for m in PasteGenerator().generate(request(count=5, seed=seed), [bg, source])
                if not isinstance(m, Rejected)]

    first, again, other = made(3), made(3), made(4)
    assert first and len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    assert any(not np.array_equal(a.boxes, b.boxes) for a, b in zip(first, other, strict=False))
