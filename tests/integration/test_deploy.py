"""`edgeloop deploy` against a real `prefect server`: the deployments, their schedules and the concurrency limits appear.

Schedules come from edgeloop.toml, so one is overridden there and must show up as such.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout_s: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false"}
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 180, "prefect server answered /health")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_deploy_serves_every_scheduled_flow(prefect_server: str, tmp_path: Path) -> None:
    (tmp_path / "edgeloop.toml").write_text('schedule_cycle = "30 3 * * *"\n')
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONPATH": str(REPO),
           "EDGELOOP_WORKSPACE": str(tmp_path / "ws")}
    log = (tmp_path / "deploy.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "flows", "deploy", "--budget", "40", "--selection",
                             "diversity=false"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listed() -> dict[str, dict] | None:
            found = httpx.post(f"{prefect_server}/deployments/filter", json={}, timeout=5).json()
            return {d["name"]: d for d in found} if len(found) >= 4 else None

        deployments = _wait(listed, 180, "four deployments registered")
        assert proc.poll() is None, (tmp_path / "deploy.log").read_text()[-2000:]
        crons = {name: [s["schedule"]["cron"] for s in d["schedules"]] for name, d in deployments.items()}
        assert crons == {"ingest": ["*/5 * * * *"], "review-pull": ["*/10 * * * *"], "review-push": ["0 * * * *"],
                         "nightly": ["30 3 * * *"]}
        assert all(d["parameters"]["workspace"] == str((tmp_path / "ws").resolve()) for d in deployments.values())
        # The selection switches reach the scheduled pushes and the nightly cycle, as `review push` would set them.
        for name in ("review-push", "nightly"):
            given = deployments[name]["parameters"]
            assert given["budget"] == 40 and given["selection"]["diversity"] is False, given
            assert given["selection"]["rare"] is True and given["selection"]["strategy"] == "active", given
        limits = httpx.post(f"{prefect_server}/v2/concurrency_limits/filter", json={}, timeout=5).json()
        assert {"edgeloop-catalog-writer", "edgeloop-generation-spend"} <= {limit["name"] for limit in limits}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
