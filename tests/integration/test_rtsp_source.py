"""StreamSource against a real RTSP server (GStreamer, own process, loopback): live frames, a slow
consumer that stays current, and a server that freezes, dies and comes back on the same port.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from edge.frames import Frame
from edge.stream_source import StreamSource
from tests.polling import wait_until

pytestmark = pytest.mark.integration

# Short timeouts keep the test quick; FFmpeg needs about a second to probe a 25 fps stream on open.
READ_TIMEOUT_S = 1.0
OPEN_TIMEOUT_S = 4.0
BACKOFF = (0.1, 0.5)


def scene_matcher(server) -> Callable[[np.ndarray], float]:
    """Which scene a decoded frame shows, as its start position (s) in the looping clip."""
    thumbs = np.stack([cv2.resize(cv2.cvtColor(s.image, cv2.COLOR_BGR2GRAY), (40, 30)) for s in server.scenes])
    thumbs = thumbs.astype(np.float32)

    def position(image: np.ndarray) -> float:
        thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (40, 30)).astype(np.float32)
        errors = np.abs(thumbs - thumb).mean(axis=(1, 2))
        assert errors.min() < 8, f"a frame matches no scene of the clip (mean error {errors.min():.1f})"
        return int(errors.argmin()) * server.hold / server.fps

    return position


def test_live_frames_and_a_slow_consumer_gets_the_newest(rtsp_server) -> None:
    position = scene_matcher(rtsp_server)
    fps, loop_s = rtsp_server.fps, len(rtsp_server.scenes) * rtsp_server.hold / rtsp_server.fps
    source = StreamSource(rtsp_server.url, open_timeout_s=OPEN_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S)
    with source:
        frames = iter(source)
        first = next(frames)
        assert first.image.shape == (240, 320, 3) and first.image.dtype == np.uint8
        assert first.source.uri == rtsp_server.url

        # A consumer as fast as the stream: one second of frames shows several scenes.
        seen = [next(frames) for _ in range(25)]
        assert len({position(f.image) for f in seen}) >= 3, "the picture does not change"

        # A slow consumer: while it works on a frame, the stream moves on by a second (25 frames).
        # The next frame it gets must be the newest grabbed, not the one after the frame it took.
        got: list[Frame] = []
        for _ in range(4):
            got.append(next(frames))
            taken = got[-1].index
            wait_until(lambda: source.stats()["frames_read"] > taken + fps, "the stream stopped")
        got.append(next(frames))
        stats = source.stats()
    for a, b in itertools.pairwise(got):
        assert b.index >= a.index + fps, [f.index for f in got]
        # ...and its picture moved on as far as the frame count did: it really is that later frame.
        shown = (position(b.image) - position(a.image)) % loop_s
        counted = ((b.index - a.index) / fps) % loop_s
        off = min(abs(shown - counted), loop_s - abs(shown - counted))
        assert off <= 0.3, f"frame {b.index} shows {shown:.2f} s after frame {a.index}, not {counted:.2f} s"
    assert stats["frames_dropped"] >= sum(b.index - a.index - 1 for a, b in itertools.pairwise(got))
    assert stats["reconnects"] == 0 and stats["last_error"] is None


def test_a_frozen_or_killed_server_is_noticed_and_the_source_reconnects(rtsp_server) -> None:
    source = StreamSource(
        rtsp_server.url, open_timeout_s=OPEN_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S, reconnect_backoff=BACKOFF
    )
    got: list[Frame] = []
    consumer = threading.Thread(target=lambda: got.extend(source), daemon=True)
    consumer.start()
    try:
        wait_until(lambda: len(got) >= 10, "no frames from the stream")

        # Frozen: the TCP connection stays up and silent, as when a network path dies. Without the
        # read timeout FFmpeg would wait 30 s; the deadline here is half that.
        rtsp_server.freeze()
        wait_until(lambda: not source.stats()["connected"], "a frozen stream was not noticed", timeout_s=15)
        # Usually "stalled" (FFmpeg's decoder still hands out a frame per timeout), else "read failed".
        assert any(why in source.stats()["last_error"] for why in ("stalled", "read failed"))
        rtsp_server.thaw()
        resumed_at = len(got)
        wait_until(lambda: len(got) > resumed_at + 5, "no frames after the thaw")
        assert source.stats()["reconnects"] == 1

        # Killed: the connection drops. Then a new server process on the same port.
        rtsp_server.kill()
        wait_until(lambda: not source.stats()["connected"], "a killed server was not noticed", timeout_s=15)
        wait_until(lambda: "open" in source.stats()["last_error"], "no reconnect attempt while the server was down")
        count_while_down = len(got)
        restarted_at = datetime.now(UTC)
        rtsp_server.start()
        wait_until(lambda: len(got) > count_while_down + 5, "no frames after the restart")
        stats = source.stats()
        assert stats["reconnects"] == 2 and stats["connected"]
        last = got[-1]
        assert last.image.shape == (240, 320, 3) and last.captured_at > restarted_at
        assert all(b.index > a.index for a, b in itertools.pairwise(got))  # one count across reconnects
    finally:
        source.close()
        consumer.join(timeout=30)
        assert not consumer.is_alive(), "close() did not end the consumer"
