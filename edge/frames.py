"""What every frame source yields and offers: `Frame`, the `FrameSource` protocol, and `BaseSource`, the
iterator, close-from-any-thread and stats that the folder, video and stream sources share.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from edge.protocol import SourceRef


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on numpy images would raise, not compare
class Frame:
    image: np.ndarray  # H×W×3 uint8, BGR
    index: int  # frames read from this source so far, 0-based, across reconnects and loops
    timestamp_s: float  # position in the source: video PTS, or seconds since the stream started
    captured_at: datetime  # UTC wall clock when the frame was grabbed
    source: SourceRef


@runtime_checkable
class FrameSource(Protocol):
    """Iterate for frames until the source ends or `close()` is called; use it as a context manager."""

    uri: str  # safe to log: a base name, a camera, or a URL without its password

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]:
        """frames_read, frames_dropped, reconnects, last_error, plus what the source adds."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class BaseSource:
    """What every source shares: one iterator, close() from any thread, context manager, stats."""

    uri: str

    def __init__(self) -> None:
        self._closed = threading.Event()
        self._frames_gen: Iterator[Frame] | None = None
        # Held while a frame is being produced, so that close() from another thread never touches the
        # generator or the capture mid-step (OpenCV captures are not thread-safe).
        self._step = threading.Lock()
        self._frames_read = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._last_error: str | None = None

    def __iter__(self) -> Self:
        return self  # a source is its own iterator: iterating again continues, like a camera

    def __next__(self) -> Frame:
        with self._step:
            if self._frames_gen is None:
                self._frames_gen = self._frames()
            return next(self._frames_gen)

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        """Let go of what the source holds open; called on close() when no frame is being produced."""

    def close(self) -> None:
        self._closed.set()
        if self._step.acquire(blocking=False):
            try:
                if self._frames_gen is not None:
                    self._frames_gen.close()
                self._release()
            finally:
                self._step.release()
        # Otherwise another thread is producing a frame: it sees the flag and releases on its way out.

    def stats(self) -> dict[str, Any]:
        return {
            "frames_read": self._frames_read,
            "frames_dropped": self._frames_dropped,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
