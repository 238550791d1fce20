"""Tests for the frame sources: folders, video files, dispatch, and the stream grabber's logic.
The grabber runs here against a stand-in camera; tests/integration/test_rtsp_source.py uses real RTSP.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import (
    Frame,
    FrameSource,
    ImageFolderSource,
    StreamSource,
    VideoFileSource,
    backoff_delay,
    open_source,
)
from feedback.scenes import Scene, render_scene, write_video
from tests.edge.manual_clock import ManualClock

FPS, HOLD, SEEDS = 25, 2, 12  # a 24-frame, ~1 s clip: each scene held for two frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Scene]]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, write_video(path, range(SEEDS), fps=FPS, hold=HOLD)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll until `condition()` holds; fail with `what` if it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (waited {timeout_s} s)")
        time.sleep(0.01)


# -- image folders ---------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = {
        name: render_scene(seed, width=64, height=48).image for seed, name in enumerate(["c.png", "a.jpg", "D.JPG"])
    }
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / name), image)
    (tmp_path / "b.jpeg").write_bytes(b"not a jpeg at all")  # sorts between a and c: must be skipped
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder named like an image is not a file
    return tmp_path


def test_folder_source_yields_images_in_name_order_and_skips_bad_files(folder: Path) -> None:
    with ImageFolderSource(folder) as source:
        frames = list(source)
        stats = source.stats()
    assert [f.source.uri for f in frames] == ["D.JPG", "a.jpg", "c.png"]  # plain sort: capitals first
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].captured_at.tzinfo is not None
    assert stats["frames_read"] == 3 and stats["files_skipped"] == 1 and stats["frames_dropped"] == 0
    assert "b.jpeg" in stats["last_error"] and str(folder) not in stats["last_error"]


def test_folder_source_pattern_and_loop(folder: Path) -> None:
    source = ImageFolderSource(folder, pattern="*.png", loop=True)
    frames = [f for f, _ in zip(source, range(4))]
    source.close()
    assert [f.source.uri for f in frames] == ["c.png"] * 4
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert list(source) == []  # closed: iteration ends


def test_folder_loop_with_nothing_readable_ends(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"broken")
    assert list(ImageFolderSource(tmp_path, loop=True)) == []


def test_folder_source_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        ImageFolderSource(tmp_path / "missing")


# -- video files ----------------------------------------------------------------------------------


def test_video_file_source_reads_every_frame_with_its_timestamp(clip: tuple[Path, list[Scene]]) -> None:
    path, scenes = clip
    with VideoFileSource(path) as source:
        frames = list(source)
        stats = source.stats()
    assert len(frames) == SEEDS * HOLD
    assert [f.index for f in frames] == list(range(SEEDS * HOLD))
    assert [f.source.frame_index for f in frames] == list(range(SEEDS * HOLD))
    assert [f.timestamp_s for f in frames] == pytest.approx([i / FPS for i in range(SEEDS * HOLD)], abs=1e-3)
    assert all(f.source.timestamp_s == f.timestamp_s and f.source.uri == "clip.mp4" for f in frames)
    assert frames[0].image.shape == (240, 320, 3)
    for i, frame in enumerate(frames):  # the decoded picture is the scene that was encoded there
        assert mae(frame.image, scenes[i // HOLD].image) < 6
    assert stats == {"frames_read": SEEDS * HOLD, "frames_dropped": 0, "reconnects": 0, "last_error": None}


def test_video_file_source_loops_with_running_index(clip: tuple[Path, list[Scene]]) -> None:
    path, _ = clip
    with VideoFileSource(path, loop=True) as source:
        frames = [f for f, _ in zip(source, range(30))]
    assert [f.index for f in frames] == list(range(30))
    assert [f.source.frame_index for f in frames] == [*range(24), *range(6)]  # position in the file restarts
    assert frames[24].timestamp_s == 0.0


def test_video_file_source_realtime_paces_to_the_file_fps(clip: tuple[Path, list[Scene]]) -> None:
    path, _ = clip
    clock = ManualClock()
    handed_at = []
    with VideoFileSource(path, realtime=True, clock=clock.now, wait=clock.wait) as source:
        for _ in itertools.islice(source, 13):
            handed_at.append(clock.now())
    # Each frame is handed over when the clock reaches its place in the file, and not before.
    assert handed_at == pytest.approx([i / FPS for i in range(13)], abs=1e-3)
    assert clock.waits == pytest.approx([1 / FPS] * 12, abs=1e-3)
    assert source.stats()["frames_dropped"] == 0


def test_realtime_video_slows_its_clock_for_a_slow_consumer_instead_of_bursting(clip: tuple[Path, list[Scene]]) -> None:
    path, _ = clip
    clock = ManualClock()
    with VideoFileSource(path, realtime=True, clock=clock.now, wait=clock.wait) as source:
        frames = iter(source)
        next(frames), next(frames)  # at 0 and 1/FPS
        clock.advance(5 / FPS)  # the consumer works five frame periods on the second frame
        late = next(frames)  # due two periods ago: handed over at once
        assert late.source.frame_index == 2 and clock.now() == pytest.approx(6 / FPS, abs=1e-3)
        following = next(frames)  # one period after the late frame, not at once to catch up
        assert following.source.frame_index == 3 and clock.now() == pytest.approx(7 / FPS, abs=1e-3)
    assert clock.waits == pytest.approx([1 / FPS, 1 / FPS], abs=1e-3)
    assert source.stats()["frames_dropped"] == 0


def test_realtime_video_close_from_another_thread_ends_the_consumer(clip: tuple[Path, list[Scene]]) -> None:
    path, _ = clip
    source = VideoFileSource(path, realtime=True, loop=True)  # a loop: only close() ends it
    got: list[Frame] = []
    consumer = threading.Thread(target=lambda: got.extend(source), daemon=True)
    consumer.start()
    wait_until(lambda: len(got) >= 2, "the consumer got no frames")
    source.close()
    consumer.join(timeout=30)
    assert not consumer.is_alive(), "close() from another thread did not end a looping realtime video"
    assert list(source) == []


def test_video_file_source_refuses_what_is_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "fake.mp4").write_text("hello")
    with pytest.raises(ValueError, match="fake.mp4"):
        VideoFileSource(tmp_path / "fake.mp4")
    with pytest.raises(FileNotFoundError):
        VideoFileSource(tmp_path / "missing.mp4")


# -- open_source ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "uri"),
    [
        ("rtsp://cam.local:554/stream", "rtsp://cam.local:554/stream"),
        ("RTSPS://admin:hunter2@cam.local/live", "RTSPS://admin@cam.local/live"),
        ("http://10.0.0.5/video.mjpg?user=admin&pwd=hunter2", "http://10.0.0.5/video.mjpg?user=admin&pwd=***"),
        ("https://cam.example/live.m3u8?token=hunter2", "https://cam.example/live.m3u8?token=***"),
        ("usb:0", "usb:0"),
        ("2", "usb:2"),
        (" usb:1 ", "usb:1"),
    ],
)
def test_open_source_streams_and_cameras(spec: str, uri: str) -> None:
    source = open_source(spec)  # nothing is opened until iteration: no device needed here
    assert isinstance(source, StreamSource) and isinstance(source, FrameSource)
    assert source.uri == uri and "hunter2" not in repr(source)


def test_open_source_files_folders_and_keywords(clip: tuple[Path, list[Scene]], folder: Path) -> None:
    path, _ = clip
    video = open_source(str(path), realtime=True)
    assert isinstance(video, VideoFileSource) and video.realtime and isinstance(video, FrameSource)
    video.close()
    images = open_source(str(folder), loop=True)
    assert isinstance(images, ImageFolderSource) and images.loop
    stream = open_source("rtsp://h/s", read_timeout_s=1.5)
    assert isinstance(stream, StreamSource) and stream.read_timeout_s == 1.5
    assert isinstance(open_source(0), StreamSource)


@pytest.mark.parametrize("spec", ["", "/no/such/thing.mp4", "ftp://admin:hunter2@host/x", "usb:", "cam0"])
def test_open_source_refuses_anything_else(spec: str) -> None:
    with pytest.raises(ValueError, match="cannot open") as err:
        open_source(spec)
    assert "hunter2" not in str(err.value)
    if spec and "hunter2" not in spec:
        assert spec in str(err.value)


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
    caplog.set_level(logging.INFO, logger="edge.sources")
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
