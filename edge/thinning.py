"""What thins the frames the triggers propose: an upload budget (a token bucket), a perceptual hash to drop
near-duplicates of recent uploads, and the rank of a frame's rare-class evidence among the recent stream.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

# dHash bits compare neighbouring cells; on flat images (night, a wall) those are equal up to
# sensor noise, so a plain ">" would hash the same scene differently every frame. A cell must
# be brighter by this many grey levels to set its bit.
_DHASH_DEAD_BAND = 2.0


def dhash(frame: np.ndarray) -> int:
    """64-bit difference hash: similar images give hashes a small Hamming distance apart."""
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    # INTER_AREA averages whole cells, which is what makes the hash indifferent to pixel noise.
    cells = cv2.resize(gray.astype(np.float32), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (cells[:, 1:] > cells[:, :-1] + _DHASH_DEAD_BAND).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class TokenBucket:
    """Allows `capacity` events at once, refilled at `rate_per_s`; time comes from `clock`."""

    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float]) -> None:
        self._rate, self._capacity, self._clock = rate_per_s, capacity, clock
        self._tokens = capacity  # a fresh device may send its first few at once
        self._stamp = clock()

    def tokens(self) -> float:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return self._tokens

    def take(self) -> bool:
        if self.tokens() < 1.0:
            return False
        self._tokens -= 1.0
        return True


class RollingRank:
    """The last `size` values, kept sorted: where a new value ranks among them, in O(log n) plus a memmove."""

    def __init__(self, size: int) -> None:
        self._order: deque[float] = deque(maxlen=size)  # arrival order, to know which value leaves
        self._sorted: list[float] = []

    def share_above(self, value: float) -> float:
        """Adds `value`; returns the share of the window (it included) that is strictly greater."""
        if len(self._order) == self._order.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._order[0])]
        self._order.append(value)
        bisect.insort(self._sorted, value)
        return (len(self._sorted) - bisect.bisect_right(self._sorted, value)) / len(self._sorted)
