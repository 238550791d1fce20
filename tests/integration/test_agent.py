"""`edgeloop agent` as a real process against real servers on loopback: the ingest API going away,
SIGKILL and SIGTERM mid-run, signed alerts to a webhook receiver, and an RTSP camera that drops out.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.alerts import verify
from edge.spool import Spool
from feedback.scenes import write_video
from store.devices import add_device
from store.inbox import HEARTBEATS, HeartbeatRecord
from store.settings import Settings, Workspace
from tests.integration.ingest_process import ServeProcess

pytestmark = pytest.mark.integration


class Api(ServeProcess):
    """`edgeloop serve` in its own process, startable and stoppable on a fixed port."""

    def new_captures(self) -> int:
        return int(self.metric('edgeloop_ingest_captures_total{outcome="new"}'))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict]:
    root = tmp_path / "ws"
    ws = Workspace(Settings(workspace=root))
    token = add_device(ws.catalog, ws.objects, "cam-a")
    api = Api(root)
    yield {"ws": ws, "api": api, "token": token, "tmp": tmp_path}
    api.stop()


def agent_cmd(site: dict, source: str, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows", "agent", "--source", source, "--model", str(model),
            "--server", site["api"].url, "--token", site["token"], "--device", "cam-a",
            "--spool", str(site["tmp"] / "spool"), "--heartbeat-s", "1", "--json", *extra]


def finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait for the agent to exit; it must exit 0 with its JSON summary as the last line of stdout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the agent was still running {timeout} s later")
    assert proc.returncode == 0, (err or "")[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def wait_for_spooled(spool: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Block until the agent has at least `n` entries waiting in its spool."""
    deadline = time.monotonic() + timeout
    while len(list((spool / "ready").glob("*"))) < n:
        assert proc.poll() is None, "the agent exited before spooling anything"
        assert time.monotonic() < deadline, f"the agent spooled fewer than {n} entries in {timeout} s"
        time.sleep(0.05)


def wait_for_log(log: Path, text: str, proc: subprocess.Popen, since: int = 0, timeout: float = 60) -> None:
    """Block until the agent's stderr, written to `log`, shows `text` after byte `since`."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace")[since:]:
        assert proc.poll() is None, f"the agent exited before logging {text!r}"
        assert time.monotonic() < deadline, f"the agent did not log {text!r} within {timeout} s"
        time.sleep(0.1)


def wait_for_frames(ws: Workspace, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Block until a heartbeat shows the agent reading frames (fps above zero)."""
    deadline = time.monotonic() + timeout
    while not any(HeartbeatRecord.model_validate_json(ws.objects.get(key)).heartbeat.fps > 0
                  for key in ws.objects.list(HEARTBEATS)):
        assert proc.poll() is None, "the agent exited before reading a frame"
        assert time.monotonic() < deadline, f"no heartbeat showed frames within {timeout} s"
        time.sleep(0.1)


def test_api_down_for_part_of_the_run_every_capture_arrives_once(site: dict, scene_onnx: Path) -> None:
    video = site["tmp"] / "v.mp4"
    write_video(video, range(60), fps=10)  # 6 s when paced like a camera
    # Every frame is a hard example (random rate 1): the uploads, not the model, are under test.
    proc = subprocess.Popen(agent_cmd(site, str(video), scene_onnx, "--realtime", "--random-rate", "1",
                                      "--budget-per-hour", "1000000", "--drain-s", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The API is down: the agent keeps detecting and the spool grows. Wait for the spool rather than
    # a fixed time, since a loaded CI machine can take seconds just to start the agent.
    wait_for_spooled(site["tmp"] / "spool", 5, proc)
    site["api"].start()
    summary = finish(proc)
    assert summary["frames"] == 60
    assert summary["spooled"] > 20 and summary["left_in_spool"] == 0
    assert summary["upload_retries"] > 0  # it really did meet a dead API
    assert summary["uploaded"] == summary["spooled"]
    records = site["ws"].objects.list("inbox/captures")
    assert len(records) == summary["spooled"] == site["api"].new_captures()  # each once, none twice


def test_sigkill_mid_run_loses_nothing_spooled(site: dict, scene_onnx: Path) -> None:
    video = site["tmp"] / "v.mp4"
    write_video(video, range(100), fps=10)
    proc = subprocess.Popen(agent_cmd(site, str(video), scene_onnx, "--realtime", "--random-rate", "1",
                                      "--budget-per-hour", "1000000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_spooled(site["tmp"] / "spool", 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with Spool(site["tmp"] / "spool") as spool:
        stats = spool.stats()
        spooled = spool.depth()
    assert spooled > 5 and stats["corrupt_entries"] == 0

    site["api"].start()
    short = site["tmp"] / "short.mp4"
    write_video(short, range(1000, 1003), fps=10)
    summary = finish(subprocess.Popen(agent_cmd(site, str(short), scene_onnx, "--random-rate", "0",
                                                "--drain-s", "60"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    assert summary["left_in_spool"] == 0
    assert len(site["ws"].objects.list("inbox/captures")) == spooled == site["api"].new_captures()


class _Receiver(BaseHTTPRequestHandler):
    secret = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
    deliveries: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(self.secret, dict(self.headers.items()), body)
        type(self).deliveries.append({"valid": ok, "id": self.headers["webhook-id"], **json.loads(body)})
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_alerts_reach_the_webhook_signed_once_per_object(site: dict, ppe_onnx: Path, ppe_dir: Path) -> None:
    from edge.detectors.load import load_detector
    from edge.sources import open_source

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.deliveries = []
    site["api"].start()
    frames, threshold = 150, 0.6
    try:
        summary = finish(subprocess.Popen(
            agent_cmd(site, str(ppe_dir / "pool_stream.mp4"), ppe_onnx, "--max-frames", str(frames),
                      "--alert-webhook", f"http://127.0.0.1:{server.server_port}/hook",
                      "--alert-secret", _Receiver.secret, "--alert-classes", "helmet",
                      "--alert-confidence", str(threshold), "--drain-s", "30"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    finally:
        server.shutdown()
    alerts = _Receiver.deliveries
    assert summary["alerts"]["sent"] == len(alerts) > 0
    assert all(a["valid"] for a in alerts)
    assert all(a["class_name"] == "helmet" and a["confidence"] >= threshold for a in alerts)
    assert len({a["tracker_id"] for a in alerts}) == len(alerts)  # once per tracked object
    assert len({a["id"] for a in alerts}) == len(alerts)
    # Far fewer alerts than frames showing a confident helmet: not once per frame.
    detector = load_detector(ppe_onnx)
    confident = 0
    with open_source(str(ppe_dir / "pool_stream.mp4")) as source:
        for frame in source:
            if frame.index >= frames:
                break
            d = detector.detect(frame.image)
            confident += int(((d.data["class_name"] == "helmet") & (d.confidence >= threshold)).any())
    assert len(alerts) < confident


class _SlowReceiver(_Receiver):
    """Takes its time over each alert, so alerts are still queued when the last frame is done."""

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(0.5)
        super().do_POST()


def test_alerts_delivered_while_the_agent_drains_count_in_its_summary(
    site: dict, ppe_onnx: Path, ppe_dir: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _SlowReceiver.deliveries = []
    site["api"].start()
    try:
        summary = finish(subprocess.Popen(
            agent_cmd(site, str(ppe_dir / "pool_stream.mp4"), ppe_onnx, "--max-frames", "20",
                      "--alert-webhook", f"http://127.0.0.1:{server.server_port}/hook",
                      "--alert-secret", _Receiver.secret, "--alert-classes", "helmet",
                      "--alert-confidence", "0.6", "--drain-s", "30"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    finally:
        server.shutdown()
    stats, delivered = summary["alerts"], _SlowReceiver.deliveries
    # Every alert raised is accounted for, and what reached the receiver is what the summary calls sent.
    assert stats["sent"] == len(delivered) > 0 and stats["queued"] == 0
    assert len({a["id"] for a in delivered}) == len(delivered) and all(a["valid"] for a in delivered)


def test_sigterm_stops_the_agent_cleanly_and_drains_its_uploads(site: dict, scene_onnx: Path) -> None:
    site["api"].start()
    video = site["tmp"] / "v.mp4"
    write_video(video, range(100), fps=10, hold=3)  # 30 s when paced like a camera
    proc = subprocess.Popen(agent_cmd(site, str(video), scene_onnx, "--realtime", "--random-rate", "1",
                                      "--budget-per-hour", "1000000", "--drain-s", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while site["api"].new_captures() < 3:  # frames detected, spooled and uploaded
        assert proc.poll() is None, "the agent exited before uploading anything"
        assert time.monotonic() < deadline, "the agent uploaded fewer than 3 captures in 60 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    summary = finish(proc)  # exit 0, the JSON summary printed
    assert 3 <= summary["frames"] < 300  # stopped by the signal, not by the end of the video
    # runner.py: a clean stop drains the spool for up to --drain-s; what is left stays for the next start.
    assert summary["left_in_spool"] == 0 and summary["uploaded"] == summary["spooled"] >= 3
    assert len(site["ws"].objects.list("inbox/captures")) == summary["spooled"] == site["api"].new_captures()
    with Spool(site["tmp"] / "spool") as spool:
        assert spool.depth() == 0 and spool.stats()["corrupt_entries"] == 0


def agent_on_camera(site: dict, scene_onnx: Path, camera_url: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    """The agent on an RTSP camera, its stderr (where the source logs) going to a file."""
    log = site["tmp"] / "agent.err"
    with log.open("w") as err:
        proc = subprocess.Popen(agent_cmd(site, camera_url, scene_onnx, "--random-rate", "0", *extra),
                                stdout=subprocess.PIPE, stderr=err, text=True)
    return proc, log


def test_rtsp_camera_drops_out_and_the_agent_reconnects(site: dict, scene_onnx: Path, rtsp_server) -> None:
    site["api"].start()
    proc, log = agent_on_camera(site, scene_onnx, rtsp_server.url, "--max-frames", "150")
    wait_for_frames(site["ws"], proc)
    since = log.stat().st_size
    rtsp_server.kill()  # the camera goes away...
    wait_for_log(log, "could not open the stream", proc, since)  # ...the agent tries it again, still running
    rtsp_server.start()  # ...and it comes back on the same address
    summary = finish(proc, timeout=180)
    assert summary["frames"] == 150 and summary["reconnects"] >= 1


def test_sigterm_stops_the_agent_while_its_camera_is_down(site: dict, scene_onnx: Path, rtsp_server) -> None:
    site["api"].start()
    proc, log = agent_on_camera(site, scene_onnx, rtsp_server.url)
    wait_for_frames(site["ws"], proc)
    since = log.stat().st_size
    rtsp_server.kill()
    wait_for_log(log, "could not open the stream", proc, since)  # the frame loop now waits for the camera
    proc.send_signal(signal.SIGTERM)
    summary = finish(proc, timeout=60)
    assert summary["frames"] > 0 and summary["left_in_spool"] == 0

