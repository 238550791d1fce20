"""The edit generators' shared geometry: which boxes are edited, the crop a model sees, and what is blended back."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.synthesis.compose.edit_sites import MIN_BOX_PX, blend_back, edit_sites
from feedback.synthesis.port import LabelledFrame, SynthesisRequest


def frame() -> LabelledFrame:
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    boxes = [[100, 80, 130, 110], [2, 2, 30, 40], [118, 100, 150, 140], [200, 60, 204, 64], [131, 82, 137, 92]]
    return LabelledFrame("f" * 64, image, np.array(boxes, float), np.array([0, 0, 2, 0, 3]))


def test_every_confusable_box_big_enough_is_a_site_with_its_crop_holding_the_region_holding_the_box() -> None:
    material = [frame()]
    sites = edit_sites(SynthesisRequest(target_class=1, count=4, seed=3, confusable_classes=(0,)), material)
    assert sorted(s.box_index for s in sites) == [0, 1]  # classes 2, 3 are not confusable; box 3 is too small
    for site in sites:
        x1, y1, x2, y2 = material[0].boxes[site.box_index]
        cx1, cy1, cx2, cy2 = site.crop
        rx1, ry1, rx2, ry2 = site.region
        assert 0 <= cx1 <= rx1 <= x1 and 0 <= cy1 <= ry1 <= y1  # crop ⊇ neighbourhood ⊇ box, inside the frame
        assert x2 <= rx2 <= cx2 <= 320 and y2 <= ry2 <= cy2 <= 240
    again = edit_sites(SynthesisRequest(target_class=1, count=4, seed=3, confusable_classes=(0,)), material)
    assert [s.box_index for s in again] == [s.box_index for s in sites]  # the order is the seed's


def test_blend_back_changes_the_box_and_nothing_outside_its_neighbourhood_or_on_other_boxes() -> None:
    f = frame()
    site = next(s for s in edit_sites(SynthesisRequest(1, 1, confusable_classes=(0,)), [f]) if s.box_index == 0)
    cx1, cy1, cx2, cy2 = site.crop
    out = blend_back(site, np.zeros((cy2 - cy1, cx2 - cx1, 3), np.uint8))  # the "model" paints the crop black
    changed = np.argwhere((out != f.image).any(axis=2))
    rx1, ry1, rx2, ry2 = site.region
    assert changed[:, 1].min() >= rx1 and changed[:, 1].max() < rx2
    assert changed[:, 0].min() >= ry1 and changed[:, 0].max() < ry2
    assert (out[82:108, 102:128] == 0).all()  # inside the edited box: the edit, whole
    # Box 4 lies in the neighbourhood but clear of the edited box: it keeps its pixels, so its label holds.
    assert rx1 <= 131 and 137 <= rx2 and (out[82:92, 131:137] == f.image[82:92, 131:137]).all()
    assert (out[82:92, 130:131] != f.image[82:92, 130:131]).any()  # beside it, the feather does change pixels


def test_no_confusable_box_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=f"no box of classes \\(3,\\) at least {MIN_BOX_PX} px"):
        edit_sites(SynthesisRequest(1, 1, confusable_classes=(3,)), [frame()])
    with pytest.raises(ValueError, match="needs request.confusable_classes"):
        edit_sites(SynthesisRequest(1, 1), [frame()])
