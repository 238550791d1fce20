"""Live frame sources: RTSP/HTTP streams and USB cameras, read by a grabber thread that keeps only the newest
frame and reconnects with backoff; camera URLs are shown and logged without their passwords or tokens.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol, Self
from urllib.parse import unquote

import cv2
import numpy as np

from edge.frames import BaseSource, Frame
from edge.protocol import SourceRef

log = logging.getLogger(__name__)

CAMERA_SPEC = re.compile(r"(?:usb:)?(\d+)", re.IGNORECASE)
# Query parameters that carry secrets in camera URLs (e.g. `?user=admin&password=...`, `?token=...`).
_SECRET_QUERY = re.compile(
    r"(?P<key>(?:^|[?&;])(?:password|passwd|pass|pwd|token|access_token|auth|key|api_key|apikey|secret|sig|signature)=)"
    r"(?P<value>[^&;#]*)",
    re.IGNORECASE,
)


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


class Capture(Protocol):
    """The part of `cv2.VideoCapture` a stream source uses; other devices can stand in for it."""

    def isOpened(self) -> bool: ...  # OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class StreamSource(BaseSource):
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
        if isinstance(url_or_device, str) and (m := CAMERA_SPEC.fullmatch(url_or_device.strip())):
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
