"""Frame sources for the edge agent: image folders and video files here, streams and USB cameras in
`stream_source`, and `open_source`, which picks one for a spec. Each yields `Frame`s with a `SourceRef`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from edge.frames import BaseSource, Frame, FrameSource
from edge.protocol import SourceRef
from edge.stream_source import CAMERA_SPEC, StreamSource, redact_url

log = logging.getLogger(__name__)

IMAGE_PATTERNS: tuple[str, ...] = ("*.jpg", "*.jpeg", "*.png")
STREAM_SCHEMES: tuple[str, ...] = ("rtsp://", "rtsps://", "http://", "https://")


class ImageFolderSource(BaseSource):
    """Images in a folder, in sorted file-name order; files that do not decode are skipped and counted."""

    def __init__(self, path: str | os.PathLike[str], pattern: str | Sequence[str] = IMAGE_PATTERNS, loop: bool = False):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} is not a folder")
        self.patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        self.loop = loop
        self.uri = self.path.name
        self._skipped = 0

    def _listing(self) -> list[Path]:
        # Case-insensitive: cameras and phones write IMG_0001.JPG.
        pats = [p.lower() for p in self.patterns]
        return sorted(
            (p for p in self.path.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name.lower(), x) for x in pats)),
            key=lambda p: p.name,
        )

    def _frames(self) -> Iterator[Frame]:
        while not self._closed.is_set():
            delivered = 0
            for file in self._listing():  # listed again on every pass, so a loop sees new files
                if self._closed.is_set():
                    return
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None:
                    self._skipped += 1
                    self._last_error = f"cannot decode {file.name}"
                    log.warning("skipping %s in %s: not a readable image", file.name, self.path)
                    continue
                frame = Frame(
                    image=image, index=self._frames_read, timestamp_s=0.0,  # a still has no position in time
                    captured_at=datetime.now(UTC), source=SourceRef(uri=file.name),
                )  # fmt: skip
                self._frames_read += 1
                delivered += 1
                yield frame
            if not self.loop or delivered == 0:  # nothing readable: looping would only spin
                return

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "files_skipped": self._skipped}


class VideoFileSource(BaseSource):
    """Every frame of a video file in order, never dropping; `realtime` paces it like a camera."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        realtime: bool = False,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ):
        super().__init__()
        self._clock, self._wait = clock, wait  # the pacing's sense of time; tests move it by hand
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} is not a file")
        self.realtime = realtime
        self.loop = loop
        self.uri = self.path.name
        self._cap = self._open()  # opened now, so that a file that is not a video fails here
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 0.0

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"cannot decode {self.path.name} as a video")
        return cap

    def _frames(self) -> Iterator[Frame]:
        try:
            while True:
                delivered = yield from self._one_pass()
                if not self.loop or delivered == 0 or self._closed.is_set():
                    return
                self._cap.release()  # reopening is more reliable than seeking back in every container
                self._cap = self._open()
        finally:
            self._cap.release()

    def _one_pass(self) -> Generator[Frame, None, int]:
        """One pass through the file; returns how many frames it delivered."""
        # The pacing clock: frame `pts` is due at anchor_wall + (pts - anchor_pts).
        anchor_wall, anchor_pts = self._clock(), 0.0
        position = 0
        while not self._closed.is_set():
            ok, image = self._cap.read()
            if not ok or image is None:
                return position
            pts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if pts < 0 or (position > 0 and pts == 0.0):  # no usable PTS: derive it from the frame rate
                pts = position / self.fps if self.fps > 0 else 0.0
            if self.realtime:
                if position == 0:
                    anchor_wall, anchor_pts = self._clock(), pts
                delay = anchor_wall + (pts - anchor_pts) - self._clock()
                if delay > 0:
                    if self._wait(self._closed, delay):
                        return position
                else:  # a slow consumer slows the clock instead of getting a burst of late frames
                    anchor_wall, anchor_pts = self._clock(), pts
            frame = Frame(
                image=image, index=self._frames_read, timestamp_s=pts, captured_at=datetime.now(UTC),
                source=SourceRef(uri=self.uri, frame_index=position, timestamp_s=pts),
            )  # fmt: skip
            self._frames_read += 1
            position += 1
            yield frame
        return position

    def _release(self) -> None:
        self._cap.release()


def is_live(spec: str | int) -> bool:
    """A camera or stream (what `open_source` opens as a StreamSource): it never ends by itself."""
    text = str(spec).strip()
    return text.lower().startswith(STREAM_SCHEMES) or bool(CAMERA_SPEC.fullmatch(text))


def open_source(spec: str | int, **kwargs: Any) -> FrameSource:
    """`rtsp://`, `rtsps://`, `http(s)://` → stream; `usb:N` or `N` → camera N; a folder → images;
    a file → video. Keyword arguments go to the chosen source's constructor."""
    text = str(spec).strip()
    if is_live(text):
        return StreamSource(text, **kwargs)
    path = Path(text).expanduser()
    if text and path.is_dir():
        return ImageFolderSource(path, **kwargs)
    if text and path.is_file():
        return VideoFileSource(path, **kwargs)
    raise ValueError(
        f"cannot open {redact_url(text)!r}: not a stream URL (rtsp://, rtsps://, http(s)://), "
        "a camera (usb:N or N), a folder or a file"
    )
