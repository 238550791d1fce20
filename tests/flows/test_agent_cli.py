"""`edgeloop agent` as a new user meets it: a .pt for a model, a wrong server URL or token, a video file and its
upload budget; and `edgeloop serve --access-log`. Real ingest API on loopback, real ONNX Runtime detector.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.runner import LIVE_BUDGET_PER_HOUR, upload_budget
from feedback.ingest.serving import BackgroundServer, wait_for_health
from flows.cli import app
from store.devices import add_device
from store.settings import Settings, Workspace
from tests.edge.planted_model import planted_onnx

# One unsure box on every frame: the uncertainty trigger selects each of them.
UNSURE = [(10, 10, 8, 8, 0, 0.4)]
FRAMES = 8


def invoke(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(app, list(args), env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    """A folder of noise frames: no two alike, so the dedup lets every one through."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(FRAMES):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.random.default_rng(i).integers(0, 256, (64, 64, 3), np.uint8))
    return folder


@pytest.fixture
def site(tmp_path: Path):  # noqa: ANN201 - (url, token, workspace)
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    token = add_device(ws.catalog, ws.objects, "cam1")
    with BackgroundServer(ws.settings) as url:
        yield url, token, ws


def agent_args(source: Path, model: Path, spool: Path, *extra: str) -> list[str]:
    return ["agent", "--source", str(source), "--model", str(model), "--spool", str(spool), "--drain-s", "10",
            "--random-rate", "0", *extra]


def test_a_pt_model_is_exported_to_onnx_once_beside_it(tmp_path: Path, frames: Path, site, scene_pt: Path) -> None:
    url, token, _ = site
    pt = tmp_path / "model.pt"
    shutil.copyfile(scene_pt, pt)
    onnx = tmp_path / f"model.{hashlib.sha256(pt.read_bytes()).hexdigest()[:12]}.onnx"
    args = agent_args(frames, pt, tmp_path / "spool", "--server", url, "--token", token, "--random-rate", "1")
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert onnx.is_file() and f"exporting it to ONNX once, as {onnx}" in first.stderr
    assert "Ultralytics" not in first.output and "ONNX:" not in first.output  # the exporter's chatter stays off
    made = onnx.stat().st_mtime_ns
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert f"running {onnx}" in again.stderr and "exporting" not in again.stderr
    assert onnx.stat().st_mtime_ns == made  # the cached export, not a new one


def test_a_pt_model_without_ultralytics_says_how_to_get_an_onnx(
    tmp_path: Path, frames: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"a checkpoint")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # as on a device installed with edgeloop[edge]
    result = invoke(*agent_args(frames, pt, tmp_path / "spool", "--server", "http://127.0.0.1:9", "--token", "t"))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --model {pt} is a PyTorch checkpoint, and this install has no ultralytics")
    assert f"yolo export model={pt} format=onnx" in line and "edgeloop publish" in line
    assert not list(tmp_path.glob("*.onnx"))


def test_a_model_of_another_kind_names_the_ways_to_an_onnx(tmp_path: Path, frames: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not ours")
    result = invoke(*agent_args(frames, model, tmp_path / "spool", "--server", "http://127.0.0.1:9", "--token", "t"))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert "runs .onnx (ONNX Runtime) or .engine (TensorRT)" in line and "edgeloop publish" in line
    assert f"yolo export model={model} format=onnx" in line


def test_a_server_url_with_a_path_is_told_apart_from_a_refused_token(tmp_path: Path, frames: Path, site) -> None:
    url, token, _ = site
    model = planted_onnx(tmp_path / "m.onnx", UNSURE)
    wrong_path = invoke(*agent_args(frames, model, tmp_path / "spool", "--server", f"{url}/v1", "--token", token))
    assert wrong_path.exit_code == 2
    assert wrong_path.stderr.splitlines() == [
        f"error: --server {url}/v1: no edgeloop ingest API answers there (HTTP 404); the server URL should be "
        "http://HOST:PORT, without a path"]
    wrong_token = invoke(*agent_args(frames, model, tmp_path / "spool", "--server", url, "--token", "nobody's"))
    assert wrong_token.exit_code == 2
    [line] = wrong_token.stderr.splitlines()
    assert line.startswith(f"error: the server at {url} refused the device token (HTTP 401 unknown_token)")
    assert "without a path" not in line


def test_refused_uploads_are_said_once_kept_in_the_spool_and_fail_the_run(tmp_path: Path, frames: Path, site) -> None:
    url, token, ws = site
    model = planted_onnx(tmp_path / "m.onnx", UNSURE)
    spool = tmp_path / "spool"
    # An hour's drain (the last --drain-s wins): were it waited out on a token that cannot change, the test would
    # hang into pytest's timeout and fail.
    result = invoke(*agent_args(frames, model, spool, "--server", url, "--token", "wrong", "--device", "cam1",
                                "--drain-s", "3600", "--json"))
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()  # once, not once per frame
    assert line.startswith(f"error: the server at {url} refused the device token (HTTP 401 unknown_token)")
    assert line.endswith(f"captures stay in {spool} for the next start")
    summary = json.loads(result.stdout)
    assert summary["uploaded"] == 0 and "401 unknown_token" in summary["refusal"]
    assert summary["left_in_spool"] == summary["spooled"] == FRAMES
    assert ws.inbox.backlog()["captures"] == 0

    # Nothing was lost: with the right token the next start sends what the spool kept.
    fixed = invoke(*agent_args(frames, model, spool, "--server", url, "--token", token, "--device", "cam1",
                               "--max-frames", "1", "--json"))
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["left_in_spool"] == 0
    assert ws.inbox.backlog()["captures"] == FRAMES  # the kept eight; the new frame's capture is a duplicate


def test_a_folder_is_not_rationed_like_a_camera_unless_asked(tmp_path: Path, frames: Path, site) -> None:
    url, token, _ = site
    model = planted_onnx(tmp_path / "m.onnx", UNSURE)
    common = ("--server", url, "--token", token, "--device", "cam1")
    free = invoke(*agent_args(frames, model, tmp_path / "spool1", *common))
    assert free.exit_code == 0, free.output
    lines = free.stdout.splitlines()
    assert not free.stdout.lstrip().startswith("{") and len(lines) <= 5  # a few lines for people, not JSON
    assert any(f.startswith(f"hard examples: {FRAMES} selected") and "no upload budget" in f for f in lines)
    assert any(f.startswith(f"uploads: {FRAMES} accepted") for f in lines)
    assert "budget" not in free.stderr

    rationed = invoke(*agent_args(frames, model, tmp_path / "spool2", *common, "--budget-per-hour", "1", "--json"))
    assert rationed.exit_code == 0, rationed.output
    summary = json.loads(rationed.stdout)
    held = FRAMES - 5  # the bucket's burst of 5, then one an hour
    assert summary["triggers"]["selected"] == summary["uploaded"] == 5
    assert summary["triggers"]["suppressed_by_budget"] == held and "uploaded" not in summary["triggers"]
    assert rationed.stderr.splitlines() == [
        f"the upload budget (1 per hour) held back {held} frames the triggers selected; raise it with "
        "--budget-per-hour"]


def test_the_hourly_budget_applies_to_live_sources_by_default() -> None:
    assert upload_budget("rtsp://cam/stream", None) == upload_budget("usb:0", None) == LIVE_BUDGET_PER_HOUR
    assert upload_budget("site.mp4", None) is None and upload_budget("site.mp4", 30.0) == 30.0
    assert upload_budget("rtsp://cam/stream", 500.0) == 500.0


def _serve(tmp_path: Path, *flags: str) -> str:
    """Run `edgeloop serve`, ask it for /healthz, stop it; what it printed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / f"serve{len(flags)}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows", "serve", "--port", str(port), "--workspace",
                                 str(tmp_path / "ws"), *flags], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_health(proc, f"http://127.0.0.1:{port}", log.read_text)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/whoami").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return log.read_text()


def test_serve_logs_requests_only_when_asked(tmp_path: Path) -> None:
    assert '"GET /v1/whoami HTTP/1.1" 401' in _serve(tmp_path, "--access-log")
    assert "GET /v1/whoami" not in _serve(tmp_path)


def test_a_trust_root_needs_deployments_to_check_and_must_be_a_tuf_root(tmp_path: Path, frames: Path) -> None:
    model = planted_onnx(tmp_path / "m.onnx", UNSURE)
    not_root = tmp_path / "root.json"
    not_root.write_text('{"signed": {"_type": "targets"}}')
    base = [*agent_args(frames, model, tmp_path / "spool"), "--server", "http://127.0.0.1:9", "--token", "t",
            "--device", "cam1"]
    alone = invoke(*base, "--trust-root", str(not_root))
    assert alone.exit_code == 2 and "--trust-root checks the models deployments name" in alone.stderr
    wrong = invoke(*base, "--trust-root", str(not_root), "--follow-deployments", "--model-dir", str(tmp_path / "md"))
    assert wrong.exit_code == 2 and "not a TUF root metadata file" in wrong.stderr
