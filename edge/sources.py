"""Frame sources for the edge agent: image folders, video files, RTSP/HTTP streams and USB cameras.
Each yields `Frame`s with a `SourceRef` that says where the frame came from, credentials removed.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import unquote

import cv2
import numpy as np

from edge.protocol import SourceRef

log = logging.getLogger(__name__)

IMAGE_PATTERNS: tuple[str, ...] = ("*.jpg", "*.jpeg", "*.png")
STREAM_SCHEMES: tuple[str, ...] = ("rtsp://", "rtsps://", "http://", "https://")
_CAMERA_SPEC = re.compile(r"(?:usb:)?(\d+)", re.IGNORECASE)
# Query parameters that carry secrets in camera URLs (e.g. `?user=admin&password=...`, `?token=...`).
_SECRET_QUERY = re.compile(
    r"(?P<key>(?:^|[?&;])(?:password|passwd|pass|pwd|token|access_token|auth|key|api_key|apikey|secret|sig|signature)=)"
    r"(?P<value>[^&;#]*)",
    re.IGNORECASE,
)


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


def _split_url(url: str) -> tuple[str, str | None, str, str]:
    """scheme, userinfo (None when absent), host[:port], the rest (path, query, fragment)."""
    scheme, _, rest = url.partition("://")
    # The authority ends at the first '/', not at '?' or '#': those turn up unescaped in camera passwords.
    slash = rest.find("/")
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    userinfo, at, hostport = authority.rpartition("@")  # the last '@': passwords may contain one
    return scheme, (userinfo if at else None), hostport, tail


def redact_url(url: str) -> str:
    """The URL without its password or secret query values, fit for logs and records."""
    if "://" not in url:
        return url
    scheme, userinfo, hostport, tail = _split_url(url)
    user = (userinfo or "").partition(":")[0]
    tail = _SECRET_QUERY.sub(r"\g<key>***", tail)
    return f"{scheme}://{user + '@' if user else ''}{hostport}{tail}"


def _secrets_in(url: str) -> list[str]:
    """The secret strings in a URL, raw and percent-decoded, to scrub from error messages."""
    if "://" not in url:
        return []
    _, userinfo, _, tail = _split_url(url)
    found = [(userinfo or "").partition(":")[2], *(m.group("value") for m in _SECRET_QUERY.finditer(tail))]
    found = [s for s in found if s]
    return sorted({*found, *(unquote(s) for s in found)}, key=len, reverse=True)


class _Source:
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


class ImageFolderSource(_Source):
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


class VideoFileSource(_Source):
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


class Capture(Protocol):
    """The part of `cv2.VideoCapture` a stream source uses; other devices can stand in for it."""

    def isOpened(self) -> bool: ...  # OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class StreamSource(_Source):
    """A live stream or camera, read by a grabber thread that keeps only the newest frame.

    A consumer slower than the stream gets the latest picture rather than falling behind; the
    frames it never saw are counted in `frames_dropped`. A stream that fails or stalls (no frame
    for `read_timeout_s`) is released and reopened with exponential backoff and jitter, forever
    unless `max_reconnects` attempts in a row have failed; the iterator just waits meanwhile.
    `open_capture` replaces OpenCV (tests, unusual devices); by default `url_or_device` is a URL
    read through FFmpeg, or a camera index (`usb:N`, `N` or an int). `clock` times reads and
    stream timestamps, `wait(event, seconds)` the backoff (like `threading.Event.wait`).
    """

    def __init__(
        self,
        url_or_device: str | int,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.5, 30.0),
        max_reconnects: int | None = None,
        open_capture: Callable[[], Capture] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ):
        super().__init__()
        self._clock, self._wait = clock, wait
        if isinstance(url_or_device, str) and (m := _CAMERA_SPEC.fullmatch(url_or_device.strip())):
            url_or_device = int(m.group(1))
        self._target = url_or_device
        self._secrets = [] if isinstance(url_or_device, int) else _secrets_in(url_or_device)
        self.uri = f"usb:{url_or_device}" if isinstance(url_or_device, int) else redact_url(url_or_device)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff_s = reconnect_backoff
        self.max_reconnects = max_reconnects
        self._open_capture = open_capture or self._open_with_opencv
        if isinstance(url_or_device, str) and url_or_device.lower().startswith(("rtsp://", "rtsps://")):
            _prefer_rtsp_over_tcp()  # here, not in the grabber: setting the environment is not thread-safe
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False  # the grabber gave up (max_reconnects) or was closed
        self._connected = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start grabbing now rather than at the first frame asked for (`with` does this too)."""
        with self._cond:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._grab, name=f"grabber {self.uri}", daemon=True)
                self._thread.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def _frames(self) -> Iterator[Frame]:
        self.start()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._latest is not None or self._ended or self._closed.is_set())
                if self._closed.is_set() or self._latest is None:
                    return
                frame, self._latest = self._latest, None
            yield frame

    def close(self) -> None:
        """Stop; a waiting iterator returns at once. Waits up to `read_timeout_s` for the grabber to let
        go of the device (it may be inside an open or a read that OpenCV does not interrupt sooner)."""
        with self._cond:
            self._closed.set()
            self._cond.notify_all()
        super().close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.read_timeout_s)
            if self._thread.is_alive():
                log.info("%s: the grabber is still inside OpenCV; it releases the device when that returns", self.uri)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {**super().stats(), "connected": self._connected}

    # -- the grabber thread ---------------------------------------------------------------------

    def _open_with_opencv(self) -> cv2.VideoCapture:
        if isinstance(self._target, int):
            return cv2.VideoCapture(self._target)
        # OpenCV's FFmpeg default is 30 s: a silent network drop would freeze the camera that long.
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
        ]  # fmt: skip
        return cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _fail(self, message: str) -> None:
        with self._cond:
            self._last_error = self._scrub(message)
            self._connected = False

    def _grab(self) -> None:
        first = True
        retries = 0  # reconnect attempts since the stream was last good
        opened_before = False
        started = 0.0  # clock time of the first successful open: stream time counts from there
        try:
            while not self._closed.is_set():
                if not first:
                    if self.max_reconnects is not None and retries >= self.max_reconnects:
                        log.error("%s: giving up after %d reconnect attempts: %s", self.uri, retries, self._last_error)
                        return
                    retries += 1
                    delay = backoff_delay(retries, *self.backoff_s)
                    log.info("%s: reconnect attempt %d in %.1f s", self.uri, retries, delay)
                    if self._wait(self._closed, delay):
                        return
                first = False
                cap = self._try_open()
                if cap is None:
                    continue
                retries = 0
                with self._cond:
                    self._connected = True
                    if opened_before:
                        self._reconnects += 1
                if opened_before:
                    log.info("%s: reconnected", self.uri)
                else:
                    started = self._clock()
                opened_before = True
                try:
                    reason = self._read_until_broken(cap, started)
                finally:
                    cap.release()  # always from this thread: OpenCV captures are not thread-safe
                if reason is None:
                    return  # closed
                self._fail(reason)
                log.warning("%s: %s; reconnecting", self.uri, self._last_error)
        except Exception as exc:  # the grabber must not die silently: record why the stream ended
            self._fail(f"grabber crashed: {exc!r}")
            log.exception("%s: grabber crashed", self.uri)
        finally:
            with self._cond:
                self._ended = True
                self._connected = False
                self._cond.notify_all()

    def _try_open(self) -> Capture | None:
        try:
            cap = self._open_capture()
        except Exception as exc:  # noqa: BLE001  (whatever the opener raises, the answer is to retry)
            self._fail(f"open failed: {exc}")
        else:
            if cap.isOpened():
                return cap
            cap.release()
            self._fail("could not open the stream")
        log.warning("%s: %s", self.uri, self._last_error)
        return None

    def _read_until_broken(self, cap: Capture, started: float) -> str | None:
        """Publish frames until the stream breaks (returns why) or the source closes (returns None)."""
        while not self._closed.is_set():
            begun = self._clock()
            try:
                ok, image = cap.read()
            except Exception as exc:  # noqa: BLE001  (cv2.error from a broken stream is a failure like any other)
                return f"read failed: {exc}"
            now = self._clock()
            if self._closed.is_set():
                return None
            if not ok or image is None:
                return "read failed (stream ended or dropped)"
            if now - begun >= self.read_timeout_s:
                # FFmpeg's timeout interrupts a stalled read, yet it then hands out the frames still
                # in the decoder, one per timeout: a read this slow means the stream has stalled.
                return f"no frame for {now - begun:.1f} s (stalled)"
            captured_at = datetime.now(UTC)
            with self._cond:
                index, timestamp = self._frames_read, now - started
                self._frames_read += 1
                if self._latest is not None:
                    self._frames_dropped += 1  # the consumer never took it: it is overwritten
                self._latest = Frame(
                    image=image, index=index, timestamp_s=timestamp, captured_at=captured_at,
                    source=SourceRef(uri=self.uri, frame_index=index, timestamp_s=timestamp),
                )  # fmt: skip
                self._cond.notify_all()
        return None


def backoff_delay(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1, 2, ...): doubling from `first_s`, capped at
    `max_s`, then a random cut of up to half, so that cameras behind one switch do not retry in step."""
    delay = min(max_s, first_s * 2.0 ** min(attempt - 1, 60))  # bounded: a month of retries must not overflow
    return random.uniform(delay / 2, delay)


def _prefer_rtsp_over_tcp() -> None:
    """RTSP over UDP loses packets on busy Wi-Fi and smears frames; ask FFmpeg for TCP instead.

    OpenCV reads `OPENCV_FFMPEG_CAPTURE_OPTIONS` at each open. A transport the user chose is kept;
    their other options are kept too, with TCP added.
    """
    current = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    if "rtsp_transport" in current:
        return
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"{current}|rtsp_transport;tcp" if current else "rtsp_transport;tcp"


def is_live(spec: str | int) -> bool:
    """A camera or stream (what `open_source` opens as a StreamSource): it never ends by itself."""
    text = str(spec).strip()
    return text.lower().startswith(STREAM_SCHEMES) or bool(_CAMERA_SPEC.fullmatch(text))


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
