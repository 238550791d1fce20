"""The `edgeloop` commands as a person types them: devices, upload, ingest, status.

Runs the real CLI against a real workspace (DuckDB, files) and a real uvicorn server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedback.ingest.serving import BackgroundServer
from feedback.scenes import encode_jpeg, render_scene
from flows.cli import app
from store.settings import Settings, Workspace

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def test_devices_add_list_revoke(ws: Path) -> None:
    code, out, _ = run("devices", "add", "cam-1", "-w", str(ws), "--json")
    assert code == 0
    added = json.loads(out)
    assert added["device"] == "cam-1" and len(added["token"]) >= 40
    code, _, err = run("devices", "add", "cam-1", "-w", str(ws))
    assert code == 2 and "cam-1" in err
    code, _, err = run("devices", "add", "../evil", "-w", str(ws))
    assert code == 2 and "../evil" in err
    code, out, _ = run("devices", "list", "-w", str(ws), "--json")
    assert [d["device"] for d in json.loads(out)] == ["cam-1"]
    assert added["token"] not in out  # the token is shown once, never listed
    assert run("devices", "revoke", "cam-1", "-w", str(ws))[0] == 0
    assert json.loads(run("devices", "list", "-w", str(ws), "--json")[1])[0]["revoked_at"] is not None
    code, _, err = run("devices", "revoke", "nobody", "-w", str(ws))
    assert code == 2 and "nobody" in err


def test_upload_ingest_status_round_trip(ws: Path, tmp_path: Path) -> None:
    token = json.loads(run("devices", "add", "cam-1", "-w", str(ws), "--json")[1])["token"]
    files = []
    for seed in range(3):
        path = tmp_path / f"frame{seed}.jpg"
        path.write_bytes(encode_jpeg(render_scene(seed).image))
        files.append(str(path))
    workspace = Workspace(Settings(workspace=ws))
    with BackgroundServer(workspace.settings) as url:
        code, _, err = run("upload", *files, str(tmp_path / "missing.jpg"), "--server", url, "--token", token)
        assert code == 2 and "missing.jpg" in err
        assert workspace.inbox.backlog()["captures"] == 0  # checked before the first byte was sent
        code, _, err = run("upload", files[0], "--server", url, "--token", token, "--trigger", "sometimes")
        assert code == 2 and "sometimes" in err
        code, _, err = run("upload", files[0], "--server", url, "--token", "wrong-token")
        assert code == 2 and "unknown_token" in err
        code, out, _ = run("upload", *files, "--server", url, "--token", token, "--note", "missed the helmet", "--json")
        assert code == 0
        results = json.loads(out)
        assert [r["duplicate"] for r in results] == [False, False, False]
        again = json.loads(run("upload", files[0], "--server", url, "--token", token, "--json")[1])
        assert again[0]["duplicate"] is True and again[0]["id"] == results[0]["id"]

    first = json.loads(run("ingest", "-w", str(ws), "--json")[1])
    assert first["captures_added"] == 3
    assert json.loads(run("ingest", "-w", str(ws), "--json")[1])["captures_added"] == 0
    status = json.loads(run("status", "-w", str(ws), "--json")[1])
    assert status["captures_by_device"] == {"cam-1": 3}
    assert status["captures_by_trigger"] == {"operator": 3}
    assert status["inbox_backlog"]["captures"] == 0
    with workspace.catalog.connect() as con:
        notes = con.execute("select distinct note from captures").fetchall()
    assert notes == [("missed the helmet",)]


def test_two_ingest_processes_and_a_registry_write_at_once(ws: Path) -> None:
    """Three OS processes write the catalog concurrently: all succeed, nothing lost or doubled."""
    from edge.protocol import CaptureMeta, SourceRef, utc_now
    from store.inbox import CaptureRecord

    workspace = Workspace(Settings(workspace=ws))
    for i in range(400):
        meta = CaptureMeta(device="cam-1", camera="c", captured_at=utc_now(), frame_width=10, frame_height=10,
                           model_version="m", triggers=["random"], source=SourceRef(uri=f"f{i}"),
                           detections=[{"xyxy": (1, 1, 5, 5), "confidence": 0.5, "class_id": i % 3}])
        sha = f"{i:064x}"
        workspace.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, received_at=utc_now(), media_type="image/jpeg",
                                                  bytes=1, meta=meta))
    env = {**os.environ, "EDGELOOP_WORKSPACE": str(ws)}
    commands = [["ingest", "--json"], ["ingest", "--json"], ["devices", "add", "late-cam", "--json"]]
    procs = [subprocess.Popen([sys.executable, "-m", "flows", *c], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
    added = sum(json.loads(out)["captures_added"] for out, _ in outs[:2])
    assert added == 400
    with workspace.catalog.connect() as con:
        assert con.execute("select count(*), count(distinct id) from captures").fetchone() == (400, 400)
        assert con.execute("select count(*) from detections").fetchone() == (400,)
        assert con.execute("select count(*) from devices where name = 'late-cam'").fetchone() == (1,)


def test_help_shows_no_metavar_beside_a_boolean_flag() -> None:
    result = runner.invoke(app, ["review", "push", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert "--explain" in result.stdout and "<int>" in result.stdout  # values still say what they take


def test_a_usage_mistake_is_one_error_line_like_ours() -> None:
    result = runner.invoke(app, ["review", "push"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: Missing option '--budget'. (see `edgeloop review push --help`)"]
    result = runner.invoke(app, ["status", "--frobnicate"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: No such option: --frobnicate (see `edgeloop status --help`)"]


def test_output_to_a_pipe_has_no_blank_lines_from_progress_bars(ws: Path) -> None:
    code, out, err = run("ingest", "-w", str(ws))
    assert code == 0 and err == ""  # a finished transient bar left an empty line here
    [line] = out.splitlines()
    assert line.startswith("captures added: 0, ")
