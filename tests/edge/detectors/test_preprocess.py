"""The letterbox and input tensor match ultralytics' own, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils import ops

from edge.detectors.preprocess import PAD_VALUE, Letterbox, letterbox, preprocess, to_tensor

# (frame h, w) → (input h, w): landscape, portrait, odd sizes, upscaling, a thin strip, exact fit.
SHAPES = [
    ((480, 640), (320, 320)),
    ((640, 480), (320, 320)),
    ((333, 500), (320, 320)),
    ((101, 77), (320, 320)),
    ((1, 3000), (320, 320)),
    ((320, 320), (320, 320)),
    ((720, 1280), (384, 640)),
    ((479, 641), (640, 640)),
]


def _frame(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


@pytest.mark.parametrize(("orig_hw", "input_hw"), SHAPES)
def test_letterbox_image_is_ultralytics_letterbox(orig_hw, input_hw):
    frame = _frame(orig_hw)
    ours, box = letterbox(frame, input_hw)
    theirs = LetterBox(input_hw, auto=False, stride=32)(image=frame.copy())
    assert ours.shape == (*input_hw, 3)
    np.testing.assert_array_equal(ours, theirs)
    left, top = box.pad
    new_h, new_w = box.resized_hw
    assert (ours[:top] == PAD_VALUE).all() and (ours[top + new_h :] == PAD_VALUE).all()
    assert (ours[:, :left] == PAD_VALUE).all() and (ours[:, left + new_w :] == PAD_VALUE).all()


def test_tensor_is_rgb_chw_float_in_unit_range_like_ultralytics():
    img, _ = letterbox(_frame((480, 640)), (320, 320))
    tensor = to_tensor(img)
    # What ultralytics' predictor does: HWC→CHW, BGR→RGB, float, /255.
    reference = torch.from_numpy(img).permute(2, 0, 1).flip(0).float().div_(255)[None].numpy()
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    np.testing.assert_array_equal(tensor, reference)
    np.testing.assert_array_equal(to_tensor([img, img]), np.concatenate([reference, reference]))


@pytest.mark.parametrize(("orig_hw", "input_hw"), SHAPES)
def test_boxes_map_back_like_ultralytics_scale_boxes(orig_hw, input_hw):
    box = Letterbox.fit(orig_hw, input_hw)
    rng = np.random.default_rng(1)
    xy = rng.uniform(-20, max(input_hw) + 20, (50, 2)).astype(np.float32)
    in_boxes = np.concatenate([xy, xy + rng.uniform(0, 100, (50, 2)).astype(np.float32)], axis=1)
    theirs = ops.scale_boxes(input_hw, torch.from_numpy(in_boxes.copy()), orig_hw).numpy()
    np.testing.assert_allclose(box.to_frame(in_boxes), theirs, atol=1e-3)


@pytest.mark.parametrize(("orig_hw", "input_hw"), SHAPES)
def test_letterbox_round_trip(orig_hw, input_hw):
    h, w = orig_hw
    box = Letterbox.fit(orig_hw, input_hw)
    rng = np.random.default_rng(2)
    x1, x2 = np.sort(rng.uniform(0, w, (2, 40)), axis=0)
    y1, y2 = np.sort(rng.uniform(0, h, (2, 40)), axis=0)
    frame_boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    # float32 over a few thousand pixels: a hundredth of a pixel is plenty.
    np.testing.assert_allclose(box.to_frame(box.to_input(frame_boxes)), frame_boxes, atol=1e-2)


def test_boxes_in_the_padding_are_clipped_to_the_frame():
    box = Letterbox.fit((480, 640), (320, 320))  # 320x240 image, 40 px of grey above and below
    assert box.pad == (0, 40) and box.resized_hw == (240, 320)
    out = box.to_frame(np.array([[-10, 0, 330, 300]], dtype=np.float32))
    np.testing.assert_allclose(out, [[0, 0, 640, 480]])


def test_preprocess_returns_batch_of_one_and_its_letterbox():
    tensor, box = preprocess(_frame((333, 500)), (320, 320))
    assert tensor.shape == (1, 3, 320, 320)
    assert box.orig_hw == (333, 500) and box.input_hw == (320, 320)


def test_rejects_frames_that_are_not_bgr():
    with pytest.raises(ValueError, match="HxWx3"):
        letterbox(np.zeros((10, 10), dtype=np.uint8), (320, 320))
