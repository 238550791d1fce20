"""Tests for the frame sources: folders, video files, and dispatch (`open_source`).
The stream grabber's tests are in test_stream_source.py; tests/integration/test_rtsp_source.py uses real RTSP.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.frames import Frame, FrameSource
from edge.sources import ImageFolderSource, VideoFileSource, open_source
from edge.stream_source import StreamSource
from feedback.scenes import Scene, render_scene, write_video
from tests.edge.manual_clock import ManualClock
from tests.polling import wait_until

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
