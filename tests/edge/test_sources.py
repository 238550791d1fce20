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

FPS, HOLD, SEEDS = 25, 2, 12  # a 24-frame, ~1 s clip: each scene held for two frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Scene]]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, write_video(path, range(SEEDS), fps=FPS, hold=HOLD)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


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
    with VideoFileSource(path, realtime=True) as source:
        start = time.monotonic()
        frames = [f for f, _ in zip(source, range(13))]
        elapsed = time.monotonic() - start
    assert len(frames) == 13
    assert 12 / FPS * 0.95 <= elapsed < 12 / FPS + 0.4
    assert source.stats()["frames_dropped"] == 0


def test_realtime_video_close_from_another_thread_returns_promptly(clip: tuple[Path, list[Scene]]) -> None:
    path, _ = clip
    source = VideoFileSource(path, realtime=True, loop=True)
    got: list[Frame] = []
    consumer = threading.Thread(target=lambda: got.extend(source))
    consumer.start()
    time.sleep(0.2)
    source.close()
    consumer.join(timeout=1.0)
    assert not consumer.is_alive() and 2 <= len(got) <= 8


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
    """Stands in for an OpenCV capture of a live stream: frame n is due at start + n/fps and, like
    FFmpeg's RTSP reader, every frame is queued, so a reader that is late falls behind the camera.
    The frame number is written into the pixels. It can fail, or stall, after some frames."""

    def __init__(self, fps: float, fail_after: int | None = None, stall_after: int | None = None, stall_s: float = 0.0):
        self.period, self.fail_after, self.stall_after, self.stall_s = 1 / fps, fail_after, stall_after, stall_s
        self.start = time.monotonic()
        self.sent = 0
        self.released = False

    def live(self) -> int:
        """The number of the frame the camera is showing right now."""
        return int((time.monotonic() - self.start) / self.period)

    def isOpened(self) -> bool:  # OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.sent == self.fail_after:
            return False, None
        if self.sent == self.stall_after:
            time.sleep(self.stall_s)
        time.sleep(max(0.0, self.start + self.sent * self.period - time.monotonic()))
        image = np.zeros((4, 6, 3), np.uint8)
        image[0, 0, :2] = self.sent % 256, self.sent // 256
        self.sent += 1
        return True, image

    def release(self) -> None:
        self.released = True


def number(frame: Frame) -> int:
    return int(frame.image[0, 0, 0]) + 256 * int(frame.image[0, 0, 1])


def cameras(*made: Camera) -> tuple[list[Camera], Callable[[], Camera]]:
    """An opener handing out the given cameras in turn (then fresh healthy ones), recording each."""
    opened: list[Camera] = []

    def open_capture() -> Camera:
        cam = made[len(opened)] if len(opened) < len(made) else Camera(fps=100)
        cam.start = time.monotonic()
        opened.append(cam)
        return cam

    return opened, open_capture


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted() -> None:
    opened, opener = cameras(Camera(fps=100))
    lags, got = [], []
    with StreamSource("rtsp://h/s", open_capture=opener) as source:
        for frame in source:
            lags.append(opened[0].live() - number(frame))
            got.append(frame)
            time.sleep(0.05)  # five camera frames of work per frame
            if len(got) == 12:
                break
        stats = source.stats()
    # Read straight from the camera, this consumer would end 12 * 4 = 48 frames behind.
    assert max(lags[1:]) <= 3, lags
    assert stats["frames_dropped"] >= 30
    assert stats["frames_read"] - stats["frames_dropped"] - len(got) in (0, 1)  # at most one left waiting
    assert [f.index for f in got] == [number(f) for f in got]  # index counts grabbed frames, gaps = drops
    assert all(b.index > a.index and b.timestamp_s > a.timestamp_s for a, b in itertools.pairwise(got))
    assert got[-1].source.frame_index == got[-1].index and got[-1].source.uri == "rtsp://h/s"
    assert opened[0].released


def test_consumer_as_fast_as_the_camera_loses_nothing() -> None:
    _, opener = cameras(Camera(fps=50))
    with StreamSource("rtsp://h/s", open_capture=opener) as source:
        got = [number(f) for f, _ in zip(source, range(25))]
        # Nothing should be lost; a few may slip past when the machine is busy (CI on two cores).
        assert source.stats()["frames_dropped"] <= 5
    assert got[-1] - got[0] <= 25


def test_a_failed_read_reconnects_and_the_index_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.sources")
    opened, opener = cameras(Camera(fps=100, fail_after=5))
    with StreamSource("rtsp://admin:hunter2@h/s", open_capture=opener, reconnect_backoff=(0.05, 0.2)) as source:
        got = []
        for frame in source:
            got.append(frame)
            if source.stats()["reconnects"] and len(got) >= 10:
                break
        stats = source.stats()
    assert len(opened) == 2 and opened[0].released
    assert stats["reconnects"] == 1 and "read failed" in stats["last_error"]
    assert all(b.index > a.index for a, b in itertools.pairwise(got))
    assert "reconnected" in caplog.text and "rtsp://admin@h/s" in caplog.text
    assert "hunter2" not in caplog.text + str(stats) + "".join(f.source.uri for f in got)


def test_a_stall_longer_than_the_read_timeout_reconnects() -> None:
    opened, opener = cameras(Camera(fps=100, stall_after=3, stall_s=0.5))
    with StreamSource("rtsp://h/s", open_capture=opener, read_timeout_s=0.2, reconnect_backoff=(0.05, 0.1)) as source:
        for _ in source:
            if source.stats()["reconnects"]:
                break
        assert "stalled" in source.stats()["last_error"]
        assert next(iter(source)).index > 3  # frames flow again
    assert len(opened) == 2


def test_gives_up_after_max_reconnects_and_the_iterator_ends() -> None:
    attempts = []

    def refuse() -> Camera:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("connection refused by rtsp://admin:hunter2@h/s")

    source = StreamSource(
        "rtsp://admin:hunter2@h/s", open_capture=refuse, max_reconnects=3, reconnect_backoff=(0.02, 0.05)
    )
    start = time.monotonic()
    assert list(source) == []
    assert len(attempts) == 4  # the first open and three reconnect attempts
    assert time.monotonic() - start < 1.0
    stats = source.stats()
    assert stats["connected"] is False and "refused" in stats["last_error"] and "hunter2" not in stats["last_error"]


def test_close_from_another_thread_wakes_a_waiting_consumer() -> None:
    def refuse() -> Camera:
        raise ConnectionRefusedError("no camera yet")

    source = StreamSource("usb:0", open_capture=refuse, reconnect_backoff=(0.05, 0.1))
    done = threading.Event()
    consumer = threading.Thread(target=lambda: (list(source), done.set()))
    consumer.start()
    time.sleep(0.3)  # the consumer is waiting and the grabber is retrying
    start = time.monotonic()
    source.close()
    assert done.wait(1.0) and time.monotonic() - start < 0.5
    consumer.join()
