"""Benchmark: the timings the source and alert tests no longer assert (they test states, not durations).

- video: a realtime video file paced against the wall clock (elapsed / the clip's own duration);
- grabber: a 100 fps stand-in camera that queues frames like FFmpeg, read by a 20 fps consumer:
  how far behind the camera the frames it gets are (a queue would fall 4 frames further per frame);
- rtsp: a real RTSP server (GStreamer, tests/integration/rtsp_server.py): open to first frame, a 5 fps
  consumer on the 25 fps stream (lag growth, frame age), freeze and kill noticed, frames back, close;
- alerts: `Alerter.observe` while the receiver is down (slowest call), and `close` giving up.
Prints one JSON line last. Needs /usr/bin/python3 with python3-gi (see .ci/run) unless --no-rtsp.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on the path, where select.py would shadow the standard
# library's `select` (subprocess needs it): the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np
import supervision as sv

from edge.alerts import AlertConfig, Alerter
from edge.frames import Frame
from edge.sources import VideoFileSource
from edge.stream_source import StreamSource
from feedback.scenes import Scene, write_video

ROOT = Path(__file__).resolve().parents[1]
RTSP_PYTHON = os.environ.get("EDGELOOP_GST_PYTHON", "/usr/bin/python3")


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> float:
    """Seconds until `condition()` held; raises after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(0.005)
    return time.monotonic() - start


def video_pacing(tmp: Path) -> dict:
    path = tmp / "clip.mp4"
    write_video(path, range(25), fps=25, hold=2)  # 50 frames, 2 s
    with VideoFileSource(path, realtime=True) as source:
        start = time.monotonic()
        frames = sum(1 for _ in source)
        elapsed = time.monotonic() - start
    expected = (frames - 1) / 25
    return {"frames": frames, "elapsed_s": round(elapsed, 3), "ratio": round(elapsed / expected, 3)}


class QueuedCamera:
    """A live camera as FFmpeg's RTSP reader presents it: frame n is due at start + n/fps and every
    frame is queued, so a late reader falls behind. The frame number is written into the pixels."""

    def __init__(self, fps: float) -> None:
        self.period, self.start, self.sent = 1 / fps, time.monotonic(), 0

    def live(self) -> int:
        return int((time.monotonic() - self.start) / self.period)

    def isOpened(self) -> bool:  # OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        time.sleep(max(0.0, self.start + self.sent * self.period - time.monotonic()))
        image = np.zeros((4, 6, 3), np.uint8)
        image[0, 0, :2] = self.sent % 256, self.sent // 256
        self.sent += 1
        return True, image

    def release(self) -> None:
        pass


def grabber_lag(frames: int = 40) -> dict:
    camera = QueuedCamera(fps=100)
    lags = []
    with StreamSource("rtsp://stand-in/camera", open_capture=lambda: camera) as source:
        for frame, _ in zip(source, range(frames)):
            lags.append(camera.live() - (int(frame.image[0, 0, 0]) + 256 * int(frame.image[0, 0, 1])))
            time.sleep(0.05)  # five camera frames of work per frame
        stats = source.stats()
    return {"lag_frames_max": max(lags[1:]), "lag_frames_median": float(np.median(lags[1:])),
            "queue_would_lag_frames": 4 * (frames - 1), "dropped": stats["frames_dropped"]}


class RtspServer:
    """tests/integration/rtsp_server.py in its own process, on one port across restarts."""

    def __init__(self, video: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.video, self.url = video, f"rtsp://127.0.0.1:{self.port}/stream"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        script = ROOT / "tests" / "integration" / "rtsp_server.py"
        self.proc = subprocess.Popen([RTSP_PYTHON, str(script), str(self.video), "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], 15)[0] or not self.proc.stdout.readline().startswith("ready"):
            self.kill()
            raise RuntimeError(f"the RTSP server did not start; is python3-gi installed for {RTSP_PYTHON}?")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


def rtsp(tmp: Path) -> dict:
    fps, hold = 25, 5
    video = tmp / "scenes.mp4"
    scenes: list[Scene] = write_video(video, range(60), fps=fps, hold=hold)  # 12 s, a scene per 0.2 s
    loop_s = len(scenes) * hold / fps
    thumbs = np.stack([cv2.resize(cv2.cvtColor(s.image, cv2.COLOR_BGR2GRAY), (40, 30)) for s in scenes]).astype(np.float32)

    def position(image: np.ndarray) -> float:
        thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (40, 30)).astype(np.float32)
        return int(np.abs(thumbs - thumb).mean(axis=(1, 2)).argmin()) * hold / fps

    server = RtspServer(video)
    server.start()
    out: dict = {}
    try:
        with StreamSource(server.url, open_timeout_s=4.0, read_timeout_s=1.0) as source:
            start = time.monotonic()
            frames = iter(source)
            next(frames)
            out["open_to_first_frame_s"] = round(time.monotonic() - start, 3)
            for _ in range(25):  # FFmpeg hands over what it buffered while probing the stream first
                next(frames)
            marks, ages = [], []
            for frame in frames:  # a consumer at 5 fps on the 25 fps stream, for 4 s
                ages.append((datetime.now(UTC) - frame.captured_at).total_seconds())
                marks.append((time.monotonic(), position(frame.image)))
                time.sleep(0.2)
                if marks[-1][0] - marks[0][0] >= 4.0:
                    break
        wall = marks[-1][0] - marks[0][0]
        advanced = (marks[-1][1] - marks[0][1]) % loop_s
        out["slow_consumer_lag_growth_s"] = round(wall - advanced, 3)  # a queue: 0.8 s per second
        out["frame_age_ms_max"] = round(max(ages) * 1000, 1)

        source = StreamSource(server.url, open_timeout_s=4.0, read_timeout_s=1.0, reconnect_backoff=(0.1, 0.5))
        got: list[Frame] = []
        consumer = threading.Thread(target=lambda: got.extend(source), daemon=True)
        consumer.start()
        wait_until(lambda: len(got) >= 10)
        server.signal(signal.SIGSTOP)
        out["freeze_noticed_s"] = round(wait_until(lambda: not source.stats()["connected"]), 3)
        server.signal(signal.SIGCONT)
        count = len(got)
        out["frames_back_after_thaw_s"] = round(wait_until(lambda: len(got) > count), 3)
        server.kill()
        out["kill_noticed_s"] = round(wait_until(lambda: not source.stats()["connected"]), 3)
        wait_until(lambda: "open" in (source.stats()["last_error"] or ""))
        count = len(got)
        server.start()
        out["frames_back_after_restart_s"] = round(wait_until(lambda: len(got) > count), 3)
        start = time.monotonic()
        source.close()
        consumer.join(timeout=30)
        out["close_s"] = round(time.monotonic() - start, 3)
    finally:
        server.kill()
    return out


def alerts() -> dict:
    with socket.socket() as s:  # a port nobody listens on: the receiver is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = AlertConfig(f"http://127.0.0.1:{port}/", "secret", {"person"}, queue_size=10, backoff_base_s=1.0)
    alerter = Alerter(config, device="bench", camera="cam0")
    times = []
    for i in range(1000):
        dets = sv.Detections(xyxy=np.array([[10.0, 20.0, 40.0, 90.0]]), confidence=np.array([0.95]),
                             class_id=np.array([0]), tracker_id=np.array([i]),
                             data={"class_name": np.array(["person"])})
        start = time.perf_counter()
        alerter.observe(dets, i, datetime.now(UTC))
        times.append(time.perf_counter() - start)
    start = time.monotonic()
    flushed = alerter.close(timeout=0.2)
    return {"observe_us_p50": round(float(np.median(times)) * 1e6, 1), "observe_ms_max": round(max(times) * 1000, 3),
            "close_s": round(time.monotonic() - start, 3), "close_flushed": flushed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-rtsp", action="store_true", help="skip the part that needs GStreamer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"video": video_pacing(Path(tmp)), "grabber": grabber_lag(), "alerts": alerts()}
        result["rtsp"] = None if args.no_rtsp else rtsp(Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
