"""The frame loop's side of a rollout: a checked model swapped in between two frames, judged on its first
frames' latency, and rolled back to the previous model by itself when it is too slow or raises.

The frame loop calls `swap_point` before each frame and `frame_done` after it: both are a few attribute
reads in the common case. The updater's thread hands candidates over with `offer` and reads `next_event`.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge.detectors.base import Detector
from edge.protocol import UpdateState

# What the frame loop did, for the updater's thread to persist: (kind, candidate, previous, why).
Event = tuple[str, "Candidate", "Candidate", str | None]


@dataclass
class Candidate:
    key: str  # the ONNX sha256, or the updater's INSTALLED
    version: str
    detector: Detector


@dataclass
class _Trial:
    candidate: Candidate
    previous: Candidate
    budget_ms: float
    latencies: list[float]


class Probation:
    """What runs, what waits to be swapped in, and the update state; shared by the frame loop and the
    updater's thread under one lock. `refused` maps an artifact key to (why, when by `clock`)."""

    def __init__(self, *, probation_frames: int, latency_budget_ms: float | None, latency_factor: float,
                 clock: Callable[[], float], wake: threading.Event) -> None:
        self.probation_frames, self.latency_budget_ms, self.latency_factor = (
            probation_frames, latency_budget_ms, latency_factor)
        self._clock, self._wake = clock, wake
        self.lock = threading.Lock()  # guards the hand-over fields below between the loop and the thread
        self.running: Candidate | None = None
        self.state: UpdateState = "idle"
        self.target: str | None = None
        self.detail: str | None = None
        self.refused: dict[str, tuple[str, float]] = {}
        self._ready: Candidate | None = None
        self._trial: _Trial | None = None
        self._failed: str | None = None  # set by frame_done: the probation verdict, acted on at the next swap point
        self._events: deque[Event] = deque()
        self._recent_ms: deque[float] = deque(maxlen=100)  # the running model's latencies
        self._frame_ended = threading.Event()  # set by frame_done: the loop is idle until its next frame is due
        self._last_frame_at = -math.inf

    # ------------------------------------------------------------------ the updater's thread

    def busy(self) -> bool:
        """A candidate waits for its swap point or is on probation: nothing new may be prepared."""
        return self._ready is not None or self._trial is not None

    def offer(self, candidate: Candidate) -> None:
        with self.lock:
            self._ready = candidate  # the frame loop takes it at its next swap point

    def next_event(self) -> Event | None:
        """The oldest swap, verdict or rollback not yet persisted; None when there is none."""
        return self._events.popleft() if self._events else None

    def set_status(self, state: UpdateState, target: str | None, detail: str | None) -> bool:
        """Whether the state changed (an unchanged one need not be saved again)."""
        with self.lock:
            target = target if target is not None or state == "idle" else self.target
            if (self.state, self.target, self.detail) == (state, target, detail):
                return False
            self.state, self.target, self.detail = state, target, detail
        return True

    def report(self) -> tuple[UpdateState, str | None, str | None]:
        with self.lock:
            return self.state, self.target, self.detail

    def between_frames(self) -> None:
        """Return just after the frame loop finishes a frame, so that a build step, a reference frame or a MiB
        of download uses the idle time before the next frame is due instead of competing with it for the
        device's few cores. Real time, not the updater's clock: this paces work, it decides nothing. When no
        frame ran in the last second (camera down, loop not started), there is nothing to spare: return."""
        if time.monotonic() - self._last_frame_at > 1.0:
            return
        self._frame_ended.clear()
        self._frame_ended.wait(0.5)

    # ------------------------------------------------------------------ the frame loop

    def swap_point(self, current: Detector) -> Detector:
        """Called before each frame: the detector to run it with. Swaps in a checked candidate, or back
        to the previous model when the candidate failed its probation."""
        if self._ready is None and self._failed is None:
            return current  # the common case: two attribute reads
        with self.lock:
            if self._failed is not None and self._trial is not None:
                return self._roll_back(self._failed)
            ready, self._ready = self._ready, None
            if ready is None:
                return current
            previous = self.running
            assert previous is not None
            budget = self.latency_budget_ms
            if budget is None:
                recent = statistics.median(self._recent_ms) if self._recent_ms else float("inf")
                budget = self.latency_factor * recent
            self._trial = _Trial(ready, previous, budget, [])
            self.running = ready
            self._recent_ms.clear()
            self.state, self.target, self.detail = "probation", ready.version, None
            self._events.append(("swapped", ready, previous, None))
        self._wake.set()
        return ready.detector

    def frame_done(self, latency_ms: float) -> None:
        """Called after each frame with its inference time: judges a new model over its first frames."""
        self._recent_ms.append(latency_ms)
        self._last_frame_at = time.monotonic()
        self._frame_ended.set()
        trial = self._trial
        if trial is None or self._failed is not None:
            return
        trial.latencies.append(latency_ms)
        if len(trial.latencies) < self.probation_frames:
            return
        median = statistics.median(trial.latencies)
        with self.lock:
            if median > trial.budget_ms:
                self._failed = (f"median inference {median:.1f} ms over its first {len(trial.latencies)} "
                                f"frames exceeds the budget of {trial.budget_ms:.1f} ms")
                return
            self._trial = None
            self.state, self.detail = "idle", None
            self._events.append(("passed", trial.candidate, trial.previous, None))
        self._wake.set()

    def detect_failed(self, error: Exception) -> Detector | None:
        """The running model raised on a frame: a model on probation is rolled back at once (the caller
        runs the same frame on the returned previous model); otherwise None, and the error is the caller's."""
        with self.lock:
            if self._trial is None:
                return None
            return self._roll_back(f"it raised {type(error).__name__} on a frame: {error}")

    def _roll_back(self, why: str) -> Detector:
        assert self._trial is not None  # the caller holds the lock
        failed, previous = self._trial.candidate, self._trial.previous
        self._trial, self._failed = None, None
        self.running = previous
        self._recent_ms.clear()
        self.refused[failed.key] = (why, self._clock())
        self.state, self.target, self.detail = "rolled_back", failed.version, why
        self._events.append(("rolled_back", failed, previous, why))
        self._wake.set()
        return previous.detector
