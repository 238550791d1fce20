"""Fixtures for integration tests that need real servers on loopback.
RTSP: `rtsp_server` runs tests/integration/rtsp_server.py (GStreamer) in its own process.
Label Studio: `label_studio` runs one from its own venv (tests/integration/labelstudio.py) per session.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.scenes import Scene, write_video
from tests.integration.ingest_process import free_port
from tests.integration.labelstudio import INSTALL as LABEL_STUDIO_INSTALL
from tests.integration.labelstudio import LabelStudioServer, label_studio_bin

# -- RTSP server (GStreamer) ----------------------------------------------------------------------

# python3-gi is a Debian package: the server runs on the system interpreter, not the project venv.
RTSP_PYTHON = os.environ.get("EDGELOOP_GST_PYTHON", "/usr/bin/python3")
RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
RTSP_APT_LINE = (
    "apt-get update && apt-get install -y --no-install-recommends "
    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good python3-gi"
)


class RtspServer:
    """The RTSP test server as a process that a test can kill, freeze and start again on its port."""

    def __init__(self, video: Path, scenes: list[Scene], fps: int, hold: int, log: Path):
        self.video, self.scenes, self.fps, self.hold, self.log = video, scenes, fps, hold, log
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/stream"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start serving and return once it prints "ready"; the same port every time."""
        cmd = [RTSP_PYTHON, str(RTSP_SERVER_SCRIPT), str(self.video), "--port", str(self.port), "--path", "/stream"]
        with self.log.open("a") as log:  # stderr to a file: a full pipe would block the server
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.1)[0]:
                line = self.proc.stdout.readline()
                if line.startswith("ready"):
                    return
                if not line:
                    break  # it exited
        self.kill()
        pytest.fail(f"the RTSP server did not start on port {self.port}:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash or a power cut, without saying goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but no data flows, as when a network path silently dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def rtsp_server_runtime() -> str:
    """The interpreter that can run the RTSP server; fails (never skips) with how to install it."""
    probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')"
    try:
        result = subprocess.run([RTSP_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30, check=False)
        ok, why = result.returncode == 0, result.stderr.strip().splitlines()[-1:] or [""]
    except OSError as exc:
        ok, why = False, [str(exc)]
    if not ok:
        pytest.fail(
            f"GStreamer's RTSP server is not usable from {RTSP_PYTHON} ({why[0]}). Install it with:\n"
            f"    {RTSP_APT_LINE}\n(or point EDGELOOP_GST_PYTHON at a Python that has python3-gi)",
            pytrace=False,
        )
    return RTSP_PYTHON


@pytest.fixture(scope="session")
def rtsp_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Scene], int, int]:
    """A 12 s H.264 clip at 25 fps: 60 distinct scenes, each held for 5 frames (0.2 s)."""
    fps, hold = 25, 5
    path = tmp_path_factory.mktemp("rtsp") / "scenes.mp4"
    return path, write_video(path, range(60), fps=fps, hold=hold), fps, hold


@pytest.fixture
def rtsp_server(
    rtsp_server_runtime: str, rtsp_video: tuple[Path, list[Scene], int, int], tmp_path: Path
) -> Iterator[RtspServer]:
    """A started RTSP server looping `rtsp_video` at `rtsp_server.url`; killed after the test."""
    path, scenes, fps, hold = rtsp_video
    server = RtspServer(path, scenes, fps, hold, log=tmp_path / "rtsp_server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()  # SIGKILL ends a frozen process too


# -- Label Studio ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A started Label Studio at `label_studio.url` (admin token `label_studio.token`); fails, never skips,
    with the install command when it is absent. Killed at the end of the session."""
    binary = label_studio_bin()
    if binary is None:
        pytest.fail(
            "Label Studio is not installed (it needs its own venv). From the repository root run:\n"
            f"    {LABEL_STUDIO_INSTALL}\n(or point EDGELOOP_LABEL_STUDIO_BIN at a label-studio executable)",
            pytrace=False,
        )
    server = LabelStudioServer(binary, tmp_path_factory.mktemp("label_studio"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
