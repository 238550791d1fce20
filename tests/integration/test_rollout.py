"""Rolling a model out to real agents: `edgeloop serve`, `edgeloop agent --follow-deployments` processes on a
video, and the `edgeloop publish` / `rollout` commands, on loopback.

The agents start on the PPE checkpoint's ONNX as installed; the rollout sends them the same checkpoint
published from the registry (another file: stamped with its model id), so swaps are visible by version
while the detections stay comparable. Waits are for states (heartbeats, the updater's state file),
each bounded by a deadline; nothing is timed.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.detectors.onnx_runtime import OnnxDetector
from edge.protocol import Heartbeat
from feedback.rollout.desired import in_canary
from feedback.training.gate_run import register_weights
from store.devices import add_device
from store.settings import Workspace
from tests.edge.artifact_link import ArtifactLink
from tests.feedback.rollout.artifacts import holdout_workspace
from tests.integration.ingest_process import ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

EAST, WEST = "gate-east", "gate-west"  # in a 50% canary, and not


def wait_for(condition: Callable[[], bool], what: str, procs: list[subprocess.Popen] = (), timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"a process exited (code {proc.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def cli(ws_root: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "flows", *args, "-w", str(ws_root), "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class Heartbeats:
    """Every heartbeat the API stored, pending or already loaded into the catalog."""

    def __init__(self, ws: Workspace) -> None:
        self.ws, self._seen, self.by_device = ws, set(), {}

    def latest(self, device: str) -> Heartbeat | None:
        for prefix in ("inbox/heartbeats", "inbox/loaded/heartbeats"):
            for key in self.ws.objects.list(prefix):
                if key.rsplit("/", 1)[-1] in self._seen:
                    continue
                try:
                    hb = json.loads(self.ws.objects.get(key))["heartbeat"]
                except KeyError:
                    continue  # moved to loaded/ while we looked
                self._seen.add(key.rsplit("/", 1)[-1])
                self.by_device.setdefault(hb["device"], []).append(Heartbeat.model_validate(hb))
        beats = sorted(self.by_device.get(device, []), key=lambda h: h.sent_at)
        return beats[-1] if beats else None

    def count(self, device: str, version: str) -> int:
        """How many heartbeats `device` has sent while running `version`, reading the newly stored ones first."""
        self.latest(device)
        return sum(h.model_version == version for h in self.by_device.get(device, []))

    def runs(self, device: str, version: str, idle: bool = True) -> Callable[[], bool]:
        def check() -> bool:
            hb = self.latest(device)
            return hb is not None and hb.model_version == version and (not idle or hb.update_state == "idle")
        return check


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("rollout")
    ws = holdout_workspace(root, ppe_dir, n=4)
    model, _ = register_weights(ws, ppe_pt)
    published = cli(ws.settings.workspace, "publish", model.id)
    assert published["model"] == model.id and published["reference_boxes"] > 0
    tokens = {d: add_device(ws.catalog, ws.objects, d) for d in (EAST, WEST)}
    with ServeProcess(ws.settings.workspace, env={"EDGELOOP_REGISTRY_TTL_S": "0.2"}) as api:
        yield {"ws": ws, "root": ws.settings.workspace, "url": api.url, "tokens": tokens, "model": model.id,
               "onnx_sha256": published["onnx_sha256"], "installed": ppe_onnx,
               "installed_version": OnnxDetector(ppe_onnx).model_version, "video": ppe_dir / "pool_stream.mp4",
               "tmp": root}


def start_agent(site: dict, device: str, folder: Path, server: str | None = None) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flows", "agent", "--source", str(site["video"]), "--model", str(site["installed"]),
           "--server", server or site["url"], "--token", site["tokens"][device], "--device", device,
           "--spool", str(folder / "spool"), "--model-dir", str(folder / "models"), "--heartbeat-s", "0.5",
           "--realtime", "--loop", "--follow-deployments", "--poll-s", "0.5", "--probation-frames", "10",
           # The canary's latency is judged by `rollout status`; the device's own budget only has to catch a
           # model far off, not this busy machine's noise.
           "--latency-budget-ms", "10000", "--drain-s", "5", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(folder / "agent.log", "a"), text=True)


def stop_agent(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def state_file(folder: Path) -> dict:
    try:
        return json.loads((folder / "models" / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def contiguous(runs: list[dict], frames: int) -> bool:
    """Every frame 0..frames-1 run by exactly one model, in order: none dropped or run twice at a swap."""
    return (runs[0]["first_frame"] == 0 and runs[-1]["last_frame"] == frames - 1
            and all(r["frames"] == r["last_frame"] - r["first_frame"] + 1 for r in runs)
            and all(b["first_frame"] == a["last_frame"] + 1 for a, b in itertools.pairwise(runs)))


def test_a_half_canary_swaps_exactly_its_device_promote_moves_the_other_rollback_returns_both(site: dict) -> None:
    assert in_canary(EAST, 50) and not in_canary(WEST, 50)  # the same bucketing the API answers with
    ws, m1, installed = site["ws"], site["model"], site["installed_version"]
    beats = Heartbeats(ws)
    agents = {d: start_agent(site, d, site["tmp"] / d) for d in (EAST, WEST)}
    procs = list(agents.values())
    try:
        for device in agents:
            wait_for(lambda d=device: (hb := beats.latest(d)) is not None and hb.fps > 0, f"{device} running",
                     procs)
        assert beats.latest(EAST).model_version == beats.latest(WEST).model_version == installed  # type: ignore[union-attr]

        rollout = cli(site["root"], "rollout", "start", m1, "--canary", "50")
        wait_for(beats.runs(EAST, m1), f"{EAST} running {m1} after its probation", procs)
        # gate-west has heard of the rollout and was told to stay where it is.
        wait_for(lambda: (state_file(site["tmp"] / WEST).get("told") or {}).get("rollout_id") == rollout["id"],
                 f"{WEST} polling after the rollout started", procs)
        assert state_file(site["tmp"] / WEST)["told"] == {"model_version": None, "reason": "none",
                                                          "rollout_id": rollout["id"]}
        beats.latest(WEST)
        assert all(hb.model_version == installed for hb in beats.by_device[WEST])
        status = cli(site["root"], "rollout", "status")
        rows = {d["device"]: d for d in status["devices"]}
        assert (rows[EAST]["desired"], rows[EAST]["running"]) == (m1, m1)
        assert (rows[WEST]["desired"], rows[WEST]["running"]) == (None, installed)
        assert status["judgment"]["candidate_stats"]["devices"] == [EAST]

        wait_for(lambda: beats.count(EAST, m1) >= 4,
                 "enough heartbeats from the canary to judge it", procs)
        promoted = cli(site["root"], "rollout", "promote")
        assert promoted["state"] == "promoted" and promoted["healthy"], promoted["reasons"]
        wait_for(beats.runs(WEST, m1), f"{WEST} running {m1} after the promotion", procs)

        cli(site["root"], "rollout", "rollback")
        for device in agents:
            wait_for(beats.runs(device, installed), f"{device} back on its installed model", procs)
    finally:
        summaries = {d: stop_agent(p) if p.poll() is None else None for d, p in agents.items()}
    for device, summary in summaries.items():
        runs = summary["models_run"]
        assert [r["model_version"] for r in runs] == [installed, m1, installed], (device, runs)
        assert contiguous(runs, summary["frames"]), (device, runs)


class SlowLink(ArtifactLink):
    """A TCP proxy in front of the API that relays the answer to GET `path` at `rate` bytes per second and
    records the Range header of each such request: the flaky, slow uplink of a site."""

    def __init__(self, upstream: str, path: str, rate: int) -> None:
        self.rate = rate
        super().__init__(upstream, path)

    def _connection(self) -> threading.Event:
        return threading.Event()  # set while the connection's last request was for `path`

    def _requests(self, src: socket.socket, dst: socket.socket, slow: threading.Event) -> None:
        self._pump(src, dst, slow, True)

    def _responses(self, src: socket.socket, dst: socket.socket, slow: threading.Event) -> None:
        self._pump(src, dst, slow, False)

    def _pump(self, src: socket.socket, dst: socket.socket, slow: threading.Event, requests: bool) -> None:
        try:
            while data := src.recv(16384):
                if requests:
                    if self._asks_for_path(data):
                        slow.set()
                    else:
                        slow.clear()
                elif slow.is_set():
                    time.sleep(len(data) / self.rate)  # the link's pace, not an assertion
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_killed_while_downloading_or_building_it_resumes_and_never_loads_a_half_written_model(site: dict) -> None:
    m1, sha, installed = site["model"], site["onnx_sha256"], site["installed_version"]
    folder = site["tmp"] / "restarts"
    link = SlowLink(site["url"], f"/v1/artifacts/{sha}", rate=1_000_000)  # 12 s for the model
    part = folder / "models" / "downloads" / f"{sha}.part"
    installed_dir = folder / "models" / "models" / sha
    cli(site["root"], "rollout", "pin", EAST, m1)
    try:
        agent = start_agent(site, EAST, folder, server=link.url)
        wait_for(lambda: part.exists() and part.stat().st_size > 2_000_000, "the download under way", [agent])
        agent.kill()  # SIGKILL: no goodbye, as a power cut
        agent.wait(timeout=30)
        had = part.stat().st_size
        assert 0 < had < 12_000_000 and not installed_dir.exists()
        assert state_file(folder)["current"] == "installed" and state_file(folder)["update_state"] == "downloading"

        agent = start_agent(site, EAST, folder, server=link.url)
        # It resumes after the bytes it had; then stop it again while it builds what it fetched.
        wait_for(lambda: f"bytes={had}-" in link.ranges, "the download resumed with a Range", [agent])
        wait_for(lambda: state_file(folder).get("update_state") == "building", "the build", [agent])
        agent.send_signal(signal.SIGSTOP)  # frozen mid-build, then killed
        agent.kill()
        agent.wait(timeout=30)
        state = state_file(folder)
        assert state["update_state"] == "building" and state["current"] == "installed"
        assert installed_dir.is_dir() and not part.exists()  # fetched whole and checked, never run

        requests = len(link.ranges)
        agent = start_agent(site, EAST, folder, server=link.url)
        wait_for(lambda: state_file(folder).get("current") == sha and state_file(folder).get("update_state") == "idle",
                 "the swap after the restart", [agent])
        assert len(link.ranges) == requests  # nothing downloaded again
        summary = stop_agent(agent)
        runs = summary["models_run"]
        # It started on the model it had been running, not on the one it had only half built.
        assert [r["model_version"] for r in runs] == [installed, m1] and contiguous(runs, summary["frames"])
    finally:
        if agent.poll() is None:
            agent.kill()
        cli(site["root"], "rollout", "pin", EAST, "--clear")
        link.close()
