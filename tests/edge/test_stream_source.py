"""Tests for the stream source: the grabber's logic against a stand-in camera (newest frame wins, reconnects
with backoff, close from any thread); tests/integration/test_rtsp_source.py uses real RTSP.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from edge.frames import Frame
from edge.stream_source import StreamSource, backoff_delay
from tests.edge.manual_clock import ManualClock
from tests.edge.test_sources import wait_until


def test_rtsp_prefers_tcp_without_clobbering_the_users_options(monkeypatch: pytest.MonkeyPatch) -> None:
    var = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    monkeypatch.delenv(var, raising=False)
    StreamSource("http://h/x")
    assert var not in os.environ  # only RTSP needs it
    StreamSource("rtsp://h/x")
    assert os.environ[var] == "rtsp_transport;tcp"
    monkeypatch.setenv(var, "analyzeduration;500000")
    StreamSource("rtsp://h/x")
    assert os.environ[var] == "analyzeduration;500000|rtsp_transport;tcp"
    monkeypatch.setenv(var, "rtsp_transport;udp")
    StreamSource("rtsp://h/x")
    assert os.environ[var] == "rtsp_transport;udp"


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (100_000, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 10  # jittered, not in lock-step


# -- the stream grabber, against a stand-in camera ------------------------------------------------


class Camera:
    """Stands in for an OpenCV capture of a live stream; frame n carries n in its pixels. Gated, each
    read waits until the test lets a frame through (`allow`); free, a frame comes every millisecond.
    It can fail after some frames, or stall: one read that takes `stall_s` on the source's clock."""

    def __init__(
        self, *, gated: bool = False, fail_after: int | None = None,
        stall_after: int | None = None, stall_s: float = 0.0, clock: ManualClock | None = None,
    ) -> None:  # fmt: skip
        self.gate = threading.Semaphore(0) if gated else None
        self.fail_after, self.stall_after, self.stall_s, self.clock = fail_after, stall_after, stall_s, clock
        self.sent = 0
        self.released = False

    def allow(self, frames: int = 1) -> None:
        assert self.gate is not None
        self.gate.release(frames)

    def run_free(self) -> None:
        """Stop gating, so that a read waiting at the gate returns and the grabber can see a close."""
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.release()

    def isOpened(self) -> bool:  # OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.sent == self.fail_after:
            return False, None
        if self.sent == self.stall_after:
            assert self.clock is not None
            self.clock.advance(self.stall_s)
        gate = self.gate
        if gate is not None:
            gate.acquire()
        else:
            time.sleep(0.001)  # the camera's frame interval, so that the grabber does not spin
        image = np.zeros((4, 6, 3), np.uint8)
        image[0, 0, :2] = self.sent % 256, self.sent // 256
        self.sent += 1
        return True, image

    def release(self) -> None:
        self.released = True


def number(frame: Frame) -> int:
    return int(frame.image[0, 0, 0]) + 256 * int(frame.image[0, 0, 1])


def cameras(*made: Camera) -> tuple[list[Camera], Callable[[], Camera]]:
    """An opener handing out the given cameras in turn (then fresh free ones), recording each."""
    opened: list[Camera] = []

    def open_capture() -> Camera:
        cam = made[len(opened)] if len(opened) < len(made) else Camera()
        opened.append(cam)
        return cam

    return opened, open_capture


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted() -> None:
    opened, opener = cameras(Camera())
    got: list[Frame] = []
    with StreamSource("rtsp://h/s", open_capture=opener) as source:
        frames = iter(source)
        for _ in range(6):
            got.append(next(frames))
            taken = got[-1].index
            # The consumer is busy while the camera moves on by ten frames.
            wait_until(lambda: source.stats()["frames_read"] > taken + 10, "the grabber stopped reading")
        stats = source.stats()
    # A queue would hand over the frame after the one taken; the grabber hands over the newest.
    assert all(b.index >= a.index + 10 for a, b in itertools.pairwise(got)), [f.index for f in got]
    assert [f.index for f in got] == [number(f) for f in got]  # index counts grabbed frames, gaps = drops
    assert stats["frames_dropped"] >= sum(b.index - a.index - 1 for a, b in itertools.pairwise(got))
    assert stats["frames_read"] - stats["frames_dropped"] - len(got) in (0, 1)  # at most one left waiting
    assert all(b.timestamp_s > a.timestamp_s for a, b in itertools.pairwise(got))
    assert got[-1].source.frame_index == got[-1].index and got[-1].source.uri == "rtsp://h/s"
    assert opened[0].released


def test_a_consumer_that_keeps_up_loses_nothing() -> None:
    cam = Camera(gated=True)
    _, opener = cameras(cam)
    got = []
    with StreamSource("rtsp://h/s", open_capture=opener) as source:
        try:
            frames = iter(source)
            for _ in range(25):
                cam.allow()  # the camera shows its next frame only once the consumer has the last one
                got.append(number(next(frames)))
            stats = source.stats()
        finally:
            cam.run_free()
    assert got == list(range(25))
    assert stats["frames_read"] == 25 and stats["frames_dropped"] == 0


def test_a_failed_read_reconnects_and_the_index_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.stream_source")
    clock = ManualClock()
    opened, opener = cameras(Camera(fail_after=5))
    with StreamSource(
        "rtsp://admin:hunter2@h/s", open_capture=opener, reconnect_backoff=(0.05, 0.2),
        clock=clock.now, wait=clock.wait,
    ) as source:
        got = []
        for frame in source:
            got.append(frame)
            if source.stats()["reconnects"] and len(got) >= 10:
                break
        stats = source.stats()
    assert len(opened) == 2 and opened[0].released
    assert stats["reconnects"] == 1 and "read failed" in stats["last_error"]
    assert len(clock.waits) == 1 and 0.025 <= clock.waits[0] <= 0.05  # one backoff before reconnecting
    assert all(b.index > a.index for a, b in itertools.pairwise(got))
    assert "reconnected" in caplog.text and "rtsp://admin@h/s" in caplog.text
    assert "hunter2" not in caplog.text + str(stats) + "".join(f.source.uri for f in got)


@pytest.mark.parametrize(("stall_s", "reconnects"), [(0.5, 1), (0.15, 0)])
def test_a_read_slower_than_the_read_timeout_reconnects(stall_s: float, reconnects: int) -> None:
    clock = ManualClock()
    opened, opener = cameras(Camera(stall_after=3, stall_s=stall_s, clock=clock))
    with StreamSource(
        "rtsp://h/s", open_capture=opener, read_timeout_s=0.2, reconnect_backoff=(0.05, 0.1),
        clock=clock.now, wait=clock.wait,
    ) as source:
        got = [f for f in itertools.islice(source, 8)]  # frames flow on after the stall either way
        stats = source.stats()
    assert stats["reconnects"] == reconnects and len(opened) == 1 + reconnects
    if reconnects:
        assert "stalled" in stats["last_error"]
    else:
        assert stats["last_error"] is None
    assert got[-1].index >= 7


def test_gives_up_after_max_reconnects_with_growing_backoff() -> None:
    clock = ManualClock()
    attempts = []

    def refuse() -> Camera:
        attempts.append(clock.now())
        raise ConnectionRefusedError("connection refused by rtsp://admin:hunter2@h/s")

    source = StreamSource(
        "rtsp://admin:hunter2@h/s", open_capture=refuse, max_reconnects=3, reconnect_backoff=(0.1, 10.0),
        clock=clock.now, wait=clock.wait,
    )
    assert list(source) == []
    assert len(attempts) == 4  # the first open and three reconnect attempts
    first, second, third = clock.waits
    assert 0.05 <= first <= 0.1 <= second <= 0.2 <= third <= 0.4  # doubling, each jittered down by up to half
    assert [b - a for a, b in itertools.pairwise(attempts)] == pytest.approx(clock.waits)
    stats = source.stats()
    assert stats["connected"] is False and "refused" in stats["last_error"] and "hunter2" not in stats["last_error"]


def test_close_from_another_thread_wakes_a_waiting_consumer() -> None:
    def refuse() -> Camera:
        raise ConnectionRefusedError("no camera yet")

    source = StreamSource("usb:0", open_capture=refuse, reconnect_backoff=(0.05, 0.1))  # retries for ever
    done = threading.Event()
    consumer = threading.Thread(target=lambda: (list(source), done.set()), daemon=True)
    consumer.start()
    wait_until(lambda: source.stats()["last_error"] is not None, "the grabber never tried the camera")
    source.close()
    assert done.wait(30), "close() did not wake the consumer waiting for a frame"
    consumer.join()
