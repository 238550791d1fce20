"""Class evidence end to end: the agent measures it on a real model and uploads what it almost saw,
the real ingest API takes captures with and without it, and the catalog loads its values or NULL.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge.agent import Agent, AgentConfig
from edge.detectors.load import load_detector
from edge.detectors.postprocess import class_evidence
from edge.protocol import CaptureMeta, SourceRef, utc_now
from edge.sources import open_source
from edge.triggers import TriggerConfig
from store.devices import add_device
from store.inbox import load_inbox
from store.settings import Settings, Workspace
from tests.integration.ingest_process import ServeProcess

pytestmark = pytest.mark.integration

BAND = (0.001, 0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`edgeloop serve` in its own process, with one device."""
    root = tmp_path_factory.mktemp("ws")
    ws = Workspace(Settings(workspace=root))
    token = add_device(ws.catalog, ws.objects, "cam-a")
    with ServeProcess(root, tmp_path_factory.mktemp("serve") / "serve.log") as api:
        yield {"url": api.url, "ws": ws, "token": token}


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def meta(camera: str, **fields: object) -> dict:
    """A meta as JSON, exactly as sent: without `class_evidence` unless it is given."""
    body = CaptureMeta(
        device="cam-a", camera=camera, captured_at=utc_now(), frame_width=64, frame_height=48,
        model_version="m1", triggers=["uncertainty"], source=SourceRef(uri="f.jpg"),
    ).model_dump(mode="json", exclude={"class_evidence"})
    return {**body, **fields}


def post(server: dict, meta_obj: dict, image: bytes) -> httpx.Response:
    files = {"meta": ("meta.json", json.dumps(meta_obj).encode(), "application/json"), "image": ("x", image, "image/jpeg")}
    headers = {"Authorization": f"Bearer {server['token']}"}
    return httpx.post(f"{server['url']}/v1/captures", files=files, headers=headers, timeout=30)


def stored(server: dict, camera: str) -> dict[str, tuple[list[float] | None, set[str]]]:
    """source uri -> (class evidence, upload reasons) of the camera's captures, after loading the inbox."""
    ws = server["ws"]
    load_inbox(ws.catalog, ws.inbox)
    with ws.catalog.connect() as con:
        rows = con.execute(
            "SELECT c.source_uri, c.class_evidence, list(t.reason) FROM captures c "
            "JOIN triggers t ON t.capture_id = c.id WHERE c.camera = ? GROUP BY ALL",
            [camera],
        ).fetchall()
    return {uri: (evidence, set(reasons)) for uri, evidence, reasons in rows}


def test_an_old_device_without_evidence_still_uploads_and_loads_null(server: dict) -> None:
    old = meta("old-device")
    assert "class_evidence" not in old
    response = post(server, old, jpeg(1))
    assert response.status_code == 201, response.text
    assert stored(server, "old-device") == {"f.jpg": (None, {"uncertainty"})}


def test_a_capture_with_evidence_loads_its_values(server: dict) -> None:
    evidence = [0.71234, 0.00263, 0.0, 1.0]
    response = post(server, meta("new-device", class_evidence=evidence, triggers=["rare_class"]), jpeg(2))
    assert response.status_code == 201, response.text
    [(values, reasons)] = stored(server, "new-device").values()
    assert values == pytest.approx(evidence, rel=1e-6) and reasons == {"rare_class"}


@pytest.mark.parametrize(
    "evidence", [[0.5, 1.5], [-0.01], [0.1] * 10_001, [0.1, "high"]], ids=["above 1", "below 0", "too long", "text"]
)
def test_evidence_out_of_range_or_too_long_is_refused(server: dict, evidence: list) -> None:
    response = post(server, meta("bad-device", class_evidence=evidence), jpeg(3))
    assert response.status_code == 422 and response.json()["reason"] == "invalid_meta", response.text
    assert "class_evidence" in json.dumps(response.json()["detail"])


def _pick_frames(detector, images: list[Path]) -> list[tuple[Path, np.ndarray]]:
    """Real frames that test every case: first one without any box whose no_helmet evidence is in the
    band (the tracker has nothing to carry then), then two more in the band and two below it."""
    no_helmet = next(i for i, n in detector.names.items() if n == "no_helmet")
    detections = {p: detector.detect(cv2.imread(str(p))) for p in images}
    seen = [(p, class_evidence(d)) for p, d in detections.items()]
    boxes = {p: len(d) for p, d in detections.items()}
    inside = [(p, e) for p, e in seen if BAND[0] <= e[no_helmet] < BAND[1]]
    below = [(p, e) for p, e in seen if e[no_helmet] < BAND[0]]
    empty = [(p, e) for p, e in inside if boxes[p] == 0]
    others = [(p, e) for p, e in inside if boxes[p] > 0]
    if not empty or len(others) < 2 or len(below) < 2:
        pytest.fail(f"the first {len(images)} val images lack a case: {len(empty)} empty, {len(others)} in, {len(below)} below")
    return [empty[0], others[0], below[0], others[1], below[1]]


def test_the_agent_uploads_the_frames_where_a_watched_class_was_almost_seen(
    server: dict, ppe_onnx: Path, ppe_dir: Path, tmp_path: Path
) -> None:
    detector = load_detector(ppe_onnx)
    picked = _pick_frames(detector, sorted((ppe_dir / "val" / "images").glob("*.jpg"))[:40])
    folder = tmp_path / "frames"
    folder.mkdir()
    expected: dict[str, np.ndarray] = {}
    for order, (path, evidence) in enumerate(picked):  # the folder source reads in name order
        name = f"{order:02d}_{path.name}"
        shutil.copyfile(path, folder / name)
        expected[name] = evidence
    no_helmet = next(i for i, n in detector.names.items() if n == "no_helmet")
    triggers = TriggerConfig(
        uncertainty_enabled=False, flicker_enabled=False, random_enabled=False, budget_per_hour=1e9,
        budget_burst=1_000, dedup_memory=0, watch_classes=(no_helmet,), rare_band=BAND,
        rare_top=1.0,  # the band alone: five frames are too few to rank (tests/edge/test_triggers.py does that)
    )
    config = AgentConfig(server=server["url"], token=server["token"], device="cam-a", camera="agent-cam",
                         spool_dir=tmp_path / "spool", triggers=triggers, heartbeat_interval_s=3600)
    agent = Agent(config, detector, open_source(str(folder)))
    summary = agent.run()
    assert agent.close(drain_timeout_s=60) == 0
    assert summary["triggers"]["fired"]["rare_class"] == 3

    captures = stored(server, "agent-cam")
    in_band = {name for name, e in expected.items() if BAND[0] <= e[no_helmet] < BAND[1]}
    assert set(captures) == in_band and len(in_band) == 3 and min(in_band).startswith("00_")
    for name, (values, reasons) in captures.items():
        assert reasons == {"rare_class"}
        assert values == pytest.approx([round(float(v), 5) for v in expected[name]], abs=1e-6)


def test_the_cli_refuses_an_unknown_watch_class_and_a_bad_band(ppe_onnx: Path, tmp_path: Path) -> None:
    from flows.cli import app

    base = ["agent", "--source", str(tmp_path), "--model", str(ppe_onnx), "--server", "http://127.0.0.1:9",
            "--token", "t", "--device", "cam-a", "--spool", str(tmp_path / "spool")]
    runner = CliRunner()
    cases = {
        ("--watch-classes", "no_helmet,nohelmet"): "--watch-classes 'nohelmet' is not a class of the model",
        ("--watch-classes", "no_helmet", "--rare-band", "0.01"): "--rare-band '0.01' must be two numbers LOW,HIGH",
        ("--watch-classes", "no_helmet", "--rare-band", "0.2,0.1"): "rare_band (0.2, 0.1) must satisfy",
        ("--watch-classes", "no_helmet", "--rare-band", "0.01,0.5"): "--rare-band high 0.5 lies above the detection "
                                                                      "threshold 0.25",
        ("--watch-classes", "no_helmet", "--rare-top", "0"): "rare_top 0.0 must lie in (0, 1]",
    }
    for args, message in cases.items():
        result = runner.invoke(app, [*base, *args], env={**os.environ, "COLUMNS": "200"})
        text = " ".join((result.output + getattr(result, "stderr", "")).split())
        assert result.exit_code == 2 and message in text, (args, text)
