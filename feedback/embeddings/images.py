"""Stored images decoded to pixels: what the embedders, the mining sheets and the synthesis filters look at.

A missing or undecodable blob is logged and answered with None, so one bad frame never stops a batch.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from store.settings import Workspace

log = logging.getLogger(__name__)


def read_image(ws: Workspace, sha: str) -> np.ndarray | None:
    """A stored image as BGR, or None (logged) when it is missing or does not decode."""
    try:
        data = ws.blobs.get(sha)
    except KeyError:
        log.warning("image %s is missing from the blob store", sha)
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        log.warning("image %s could not be decoded", sha)
    return image
