"""Turns a BGR camera frame into the input tensor of an ultralytics-exported detector.

Letterboxes exactly as ultralytics' `LetterBox(auto=False)` does, so our outputs match theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # ultralytics' grey: the model was trained with this padding


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one frame was fitted into the model input, and so how to map boxes back.

    `ratio` is (x, y): resized size over original size per axis. Ultralytics rounds each
    resized side to whole pixels, so the two differ slightly and we keep both, as its
    `scale_boxes` does. `pad` is (left, top) in input pixels.
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    ratio: tuple[float, float]
    pad: tuple[int, int]

    @classmethod
    def fit(cls, orig_hw: tuple[int, int], input_hw: tuple[int, int]) -> Letterbox:
        """The letterbox of a frame of `orig_hw` into `input_hw` (both height, width)."""
        h0, w0 = orig_hw
        h, w = input_hw
        r = min(h / h0, w / w0)  # scaling up is allowed, as in ultralytics' predict
        # Python's round() (half to even) and the -0.1 below are ultralytics' own rounding.
        new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
        left, top = round((w - new_w) / 2 - 0.1), round((h - new_h) / 2 - 0.1)
        return cls(orig_hw, (h, w), (new_h, new_w), (new_w / w0, new_h / h0), (left, top))

    def to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from frame pixels to model-input pixels."""
        out = np.asarray(xyxy, dtype=np.float32) * np.float32(self.ratio * 2)
        return out + np.float32(self.pad * 2)

    def to_frame(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from model-input pixels back to frame pixels, clipped to the frame.

        Same order of operations as ultralytics' `scale_boxes`: subtract the pad, divide by
        the per-axis ratio, clip to [0, w] and [0, h].
        """
        out = np.asarray(xyxy, dtype=np.float32) - np.float32(self.pad * 2)
        out /= np.float32(self.ratio * 2)
        h0, w0 = self.orig_hw
        np.clip(out, 0, np.float32([w0, h0, w0, h0]), out=out)
        return out


def letterbox(frame_bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad with grey to `input_hw`; uint8 HWC, still BGR."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR frame, got shape {frame_bgr.shape}")
    box = Letterbox.fit(frame_bgr.shape[:2], input_hw)
    (new_h, new_w), (left, top) = box.resized_hw, box.pad
    img = frame_bgr
    if (new_h, new_w) != img.shape[:2]:
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    bottom, right = input_hw[0] - new_h - top, input_hw[1] - new_w - left
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return img, box


def to_tensor(images_bgr: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Letterboxed uint8 BGR HWC image(s) → float32 RGB NCHW in [0, 1], C-contiguous.

    One pass: the channel flip and the transpose are views, and the division writes
    straight into the output. Dividing (not multiplying by 1/255) is bit-identical to
    ultralytics' `div_(255)`.
    """
    batch = [images_bgr] if isinstance(images_bgr, np.ndarray) and images_bgr.ndim == 3 else list(images_bgr)
    h, w = batch[0].shape[:2]
    out = np.empty((len(batch), 3, h, w), dtype=np.float32)
    for i, img in enumerate(batch):
        np.divide(img.transpose(2, 0, 1)[::-1], np.float32(255), out=out[i], casting="unsafe")
    return out


def preprocess(frame_bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """A BGR frame → the (1, 3, h, w) float32 input tensor and the letterbox to undo."""
    img, box = letterbox(frame_bgr, input_hw)
    return to_tensor(img), box
