"""Writing a contact sheet (mining's per-cluster sheets, synthesis's per-run ones) as a PNG, whole or not at all.

A reader (the report, a browser) never sees half a file: the image goes to a temporary name, then replaces the old.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_png(path: Path, canvas: np.ndarray) -> Path:
    """`canvas` (BGR) as the PNG at `path`, its folder made; OSError where OpenCV could not write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    if not cv2.imwrite(str(tmp), canvas):
        raise OSError(f"could not write the contact sheet {tmp}")
    tmp.replace(path)
    return path
