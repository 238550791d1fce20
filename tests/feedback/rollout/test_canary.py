"""Canary judgment from heartbeats and captures that go the devices' way: inbox records, loaded into the
catalog by `load_inbox`. Each unhealthy case changes one thing about an otherwise healthy canary.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest

from edge.protocol import CaptureMeta, Detection, Heartbeat, SourceRef, utc_now
from feedback.rollout.canary import judge
from feedback.rollout.deployments import RolloutError, promote_rollout, start_rollout
from feedback.rollout.fleet_table import device_table
from store.inbox import CaptureRecord, HeartbeatRecord, load_inbox
from store.rollouts import active_rollout
from store.settings import Workspace
from tests.feedback.rollout.artifacts import clear_deployments, gate_fleet

BASE = "m-base0000000"  # what the rest of the fleet runs (the devices' installed model, say)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path):
    ws, [model] = gate_fleet(tmp_path_factory.mktemp("canary"), ppe_dir, ppe_pt, ppe_onnx, ["canary"])
    return ws, model


@pytest.fixture
def ws(fleet) -> Workspace:
    ws, model = fleet
    clear_deployments(ws, ["rollouts", "heartbeats", "captures", "detections", "triggers"])
    start_rollout(ws, model, 50)  # gate-east is in the canary, gate-west is not
    return ws


@dataclass
class Device:
    """What one device sends over a minute of running one model: a heartbeat every 10 s, and captures."""

    name: str
    version: str
    fps: float = 15.0
    p50: float = 20.0
    p99: float = 30.0
    errors: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0)
    random_captures: int = 12
    uncertainty_captures: int = 12
    boxes: dict[str, int] = field(default_factory=lambda: {"helmet": 2, "wear": 1})  # on each random capture
    update: tuple[str | None, str | None, str | None] = (None, None, None)

    def send(self, ws: Workspace) -> None:
        start = utc_now() + timedelta(seconds=1)
        state, target, detail = self.update
        for i, errors in enumerate(self.errors):
            ws.inbox.add_heartbeat(HeartbeatRecord(heartbeat=Heartbeat(
                device=self.name, sent_at=start + timedelta(seconds=10 * i), model_version=self.version,
                fps=self.fps, inference_ms_p50=self.p50, inference_ms_p99=self.p99, queue_depth=0,
                frames=150 * i, errors=errors, update_state=state, update_target=target, update_detail=detail)))
        ids = {"helmet": 0, "no_helmet": 1, "no_wear": 2, "wear": 3}
        for n, trigger, boxes in ((self.random_captures, "random", self.boxes), (self.uncertainty_captures,
                                                                                  "uncertainty", {})):
            for k in range(n):
                detections = [Detection(xyxy=(10 + j, 10, 40 + j, 40), confidence=0.9, class_id=ids[name],
                                        class_name=name) for name, count in boxes.items() for j in range(count)]
                sha = uuid.uuid4().hex * 2
                meta = CaptureMeta(
                    device=self.name, camera="cam0", captured_at=start + timedelta(seconds=k), frame_width=640,
                    frame_height=480, model_version=self.version, detections=detections, triggers=[trigger],
                    source=SourceRef(uri="cam0", frame_index=k))
                ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=100, meta=meta))


def verdict(ws: Workspace, canary: Device, rest: Device) -> tuple[bool, list[str], dict]:
    canary.send(ws)
    rest.send(ws)
    load_inbox(ws.catalog, ws.inbox)
    with ws.catalog.connect() as con:
        rollout = active_rollout(con)
    assert rollout is not None
    j = judge(ws, rollout)
    return j.healthy, j.reasons, j.as_dict()


def test_a_canary_like_the_rest_is_healthy_and_its_numbers_are_the_devices(ws: Workspace, fleet) -> None:
    model = fleet[1]
    healthy, reasons, j = verdict(ws, Device("gate-east", model), Device("gate-west", BASE))
    assert healthy and reasons == ["every check passed"]
    mine = j["candidate_stats"]
    assert mine["devices"] == ["gate-east"] and mine["heartbeats"] == 7 and mine["fps"] == 15.0
    assert (mine["latency_p50_ms"], mine["latency_p99_ms"], mine["errors"]) == (20.0, 30.0, 0)
    hours = 60 / 3600  # seven heartbeats 10 s apart
    assert mine["device_hours"] == round(hours, 4)
    assert mine["uploads_per_hour"] == {"random": round(12 / hours, 2), "uncertainty": round(12 / hours, 2)}
    assert mine["sampled_frames"] == 12 and mine["detections_per_frame"] == {"helmet": 2.0, "wear": 1.0}
    assert set(j["versions"]) == {model, BASE} and j["rest_stats"]["devices"] == ["gate-west"]
    promoted, _ = promote_rollout(ws)  # healthy: no --force needed
    assert promoted.state == "promoted"


@pytest.mark.parametrize(("change", "expected"), [
    ({"fps": 5.0}, r"fps 5\.0 against 15\.0"),
    ({"p99": 80.0}, r"inference p99 80\.0 ms against 30\.0 ms"),
    ({"errors": (0, 0, 1, 1, 3, 3, 3)}, r"3 frame\(s\) failed to detect"),
    ({"boxes": {"wear": 1}}, r"helmet: 0\.0 detections per frame against 2\.0"),
    ({"uncertainty_captures": 60}, r"uncertainty uploads 3600\.0/h per device against 720\.0/h"),
    ({"errors": (0, 0)}, r"only 2 heartbeat\(s\) from devices running it"),
])
def test_one_thing_worse_than_the_rest_makes_the_canary_unhealthy(ws: Workspace, fleet, change: dict,
                                                                   expected: str) -> None:
    healthy, reasons, _ = verdict(ws, replace(Device("gate-east", fleet[1]), **change), Device("gate-west", BASE))
    assert not healthy
    assert any(re.search(expected, r) for r in reasons), reasons
    with pytest.raises(RolloutError, match="not healthy"):
        promote_rollout(ws)


def test_a_device_that_refused_or_rolled_back_the_model_makes_it_unhealthy(ws: Workspace, fleet) -> None:
    model = fleet[1]
    # gate-east rolled the model back by itself and runs the old one again; it says so in its heartbeats.
    east = Device("gate-east", BASE, update=("rolled_back", model, "median inference 90 ms exceeds the budget"))
    healthy, reasons, j = verdict(ws, east, Device("gate-west", BASE))
    assert not healthy
    assert "gate-east rolled_back: median inference 90 ms exceeds the budget" in reasons
    assert j["refusals"] == {"gate-east": "rolled_back: median inference 90 ms exceeds the budget"}


def test_the_device_table_says_who_should_run_what_and_what_runs(ws: Workspace, fleet) -> None:
    verdict(ws, Device("gate-east", fleet[1], update=("probation", fleet[1], None)), Device("gate-west", BASE))
    rows = {r["device"]: r for r in device_table(ws)}
    assert (rows["gate-east"]["desired"], rows["gate-east"]["reason"], rows["gate-east"]["running"]) == \
        (fleet[1], "canary", fleet[1])
    assert rows["gate-east"]["update_state"] == "probation" and rows["gate-east"]["bucket"] < 50
    assert (rows["gate-west"]["desired"], rows["gate-west"]["reason"], rows["gate-west"]["running"]) == \
        (None, "none", BASE)
