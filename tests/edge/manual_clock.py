"""A clock for tests that moves only when told to, or when the code under test waits on it.
Pass `clock=c.now, wait=c.wait`: pacing, timeouts and backoff are then tested with no real time passing.
"""

from __future__ import annotations

import threading


class ManualClock:
    """`now()` starts at 0; `wait(event, s)` returns at once, having moved the clock by `s` (unless
    `event` is already set) and recorded `s` in `waits`; `advance(s)` moves it from outside."""

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()  # the code under test waits from its own threads
        self.waits: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        with self._lock:
            self.waits.append(seconds)
            self._now += seconds
        return event.is_set()
