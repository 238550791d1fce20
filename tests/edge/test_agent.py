"""The agent's frame loop survives a disk that refuses hard examples: detection goes on, the loss is counted;
and it detects, uploads and alerts at each class's own threshold, as the model (or the person) says.

The full disk is real: RLIMIT_FSIZE in a child process makes every write past a few KiB fail with EFBIG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.agent import Agent, AgentConfig
from edge.alerts import AlertConfig
from edge.detectors.load import load_detector
from edge.frames import Frame
from edge.protocol import CaptureMeta, SourceRef, utc_now
from edge.spool import Spool
from edge.triggers import TriggerConfig
from feedback.scenes import write_yolo_dataset
from tests.edge.planted_model import planted_onnx
from tests.edge.test_alerts import SECRET as ALERT_SECRET
from tests.edge.test_alerts import Receiver

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    from edge.agent import Agent, AgentConfig
    from edge.detectors.load import load_detector
    from edge.sources import ImageFolderSource
    from edge.triggers import TriggerConfig

    model, images, spool, limit = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    detector = load_detector(model)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    # Every frame is a hard example (random rate 1, no budget): each one tries the spool.
    triggers = TriggerConfig(random_rate=1.0, budget_per_hour=1e9, budget_burst=1000, dedup_memory=0)
    config = AgentConfig(server="http://127.0.0.1:9", token="t", device="cam", spool_dir=spool, triggers=triggers)
    agent = Agent(config, detector, ImageFolderSource(images))
    status = agent.run()
    agent.close(drain_timeout_s=0)
    print(json.dumps({k: status[k] for k in ("frames", "spooled", "spool_write_errors", "last_spool_error")}))
    """
)


def test_a_full_disk_costs_hard_examples_not_frames(tmp_path: Path, scene_onnx: Path) -> None:
    images = write_yolo_dataset(tmp_path / "frames", range(6)) / "images"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = subprocess.run(
        [sys.executable, str(script), str(scene_onnx), str(images), str(tmp_path / "spool"), str(4096)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["frames"] == 6  # the loop went on through every refusal
    assert status["spooled"] == 0 and status["spool_write_errors"] == 6
    assert "could not store" in status["last_spool_error"] and os.strerror(27) in status["last_spool_error"]


# -- per-class operating points (DESIGN decision 9) ---------------------------------------------------

# A planted model (tests/edge/planted_model.py) that sees the same boxes on every frame: helmet at 0.2 under
# its threshold 0.3, no_helmet at 0.1 over its 0.08, no_wear (no threshold of its own) at 0.3 and 0.2 around
# the global 0.25, wear at 0.75 over its 0.7 but under the alerts' old default 0.85.
ROWS = [(10, 10, 8, 8, 0, 0.2), (30, 10, 8, 8, 1, 0.1), (50, 10, 8, 8, 2, 0.3), (10, 40, 8, 8, 2, 0.2),
        (40, 40, 12, 12, 3, 0.75)]
THRESHOLDS = {"helmet": 0.3, "no_helmet": 0.08, "wear": 0.7}
EVERY_FRAME = TriggerConfig(random_rate=1.0, budget_per_hour=1e9, budget_burst=1000, dedup_memory=0)


def spooled_detections(spool_dir: Path) -> list[list[tuple[str, float]]]:
    """What the agent left to upload: each capture's detections as (class name, confidence), sorted."""
    with Spool(spool_dir) as spool:
        entries = spool.next_batch(100)
    metas = [CaptureMeta.model_validate_json(e.meta_json) for e in entries]
    return [sorted((d.class_name or "", round(d.confidence, 2)) for d in m.detections) for m in metas]


def four_frames(tmp_path: Path, receiver: Receiver, alert_class: str) -> Agent:
    """An agent on the planted model that has seen four frames (each a hard example), alerting `receiver` on
    `alert_class`; its uploads spool to tmp_path/spool, the server being unreachable."""
    model = planted_onnx(tmp_path / "m.onnx", ROWS, thresholds=THRESHOLDS)
    alerts = AlertConfig(receiver.url, ALERT_SECRET, {alert_class}, backoff_base_s=0.01)
    config = AgentConfig(server="http://127.0.0.1:9", token="t", device="cam", spool_dir=tmp_path / "spool",
                         triggers=EVERY_FRAME, alerts=alerts)
    agent = Agent(config, load_detector(model), [])
    for i in range(4):
        agent.step(Frame(np.zeros((64, 64, 3), np.uint8), i, i / 10, utc_now(), SourceRef(uri="t", frame_index=i)))
    return agent


def test_the_agent_uploads_and_alerts_at_each_classs_own_threshold(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        agent = four_frames(tmp_path, receiver, "wear")
        assert agent.status()["thresholds"] == {"helmet": 0.3, "no_helmet": 0.08, "wear": 0.7}
        agent.close(drain_timeout_s=0)
        [alert] = receiver.wait_for(1)
    finally:
        receiver.close()
    uploads = spooled_detections(tmp_path / "spool")
    assert len(uploads) == 4
    assert all(u == [("no_helmet", 0.1), ("no_wear", 0.3), ("wear", 0.75)] for u in uploads)
    assert alert["verified"] and (alert["payload"]["class_name"], alert["payload"]["confidence"]) == ("wear", 0.75)


def test_an_alert_class_far_below_bytetracks_own_thresholds_is_tracked_and_alerts(tmp_path: Path) -> None:
    # no_helmet operates at 0.08 and scores 0.1: ByteTrack starts tracks at 0.5/0.6 by default, so without the
    # tracker following the model's lowest threshold the box would never get a track, and never alert.
    receiver = Receiver()
    try:
        agent = four_frames(tmp_path, receiver, "no_helmet")
        agent.close(drain_timeout_s=0)
        [alert] = receiver.wait_for(1)
    finally:
        receiver.close()
    assert alert["payload"]["class_name"] == "no_helmet" and alert["payload"]["confidence"] == pytest.approx(0.1)


def _cli_agent(tmp_path: Path, model: Path, receiver: Receiver, *extra: str) -> dict:
    from flows.cli import app

    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    for i in range(4):  # noise: no two frames alike, so the dedup lets each one through
        cv2.imwrite(str(frames / f"{i:02d}.png"), np.random.default_rng(i).integers(0, 256, (64, 64, 3), np.uint8))
    args = ["agent", "--source", str(frames), "--model", str(model), "--server", "http://127.0.0.1:9", "--token", "t",
            "--device", "cam-a", "--spool", str(tmp_path / "spool"), "--alert-webhook", receiver.url,
            "--alert-secret", ALERT_SECRET, "--alert-classes", "wear", "--random-rate", "1", "--drain-s", "2",
            "--json", *extra]
    result = CliRunner().invoke(app, args, env={**os.environ, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_agent_cli_uses_the_models_thresholds_unless_told_otherwise(tmp_path: Path) -> None:
    model = planted_onnx(tmp_path / "m.onnx", ROWS, thresholds=THRESHOLDS)
    cases = {  # flags -> (alerts sent, what each frame uploads)
        (): (1, [("no_helmet", 0.1), ("no_wear", 0.3), ("wear", 0.75)]),
        ("--alert-confidence", "0.8"): (0, [("no_helmet", 0.1), ("no_wear", 0.3), ("wear", 0.75)]),
        ("--confidence", "0.25"): (0, [("no_wear", 0.3), ("wear", 0.75)]),  # the old behaviour, alerts at 0.85
        ("--confidence", "0.15", "--alert-confidence", "0.7"): (1, [("helmet", 0.2), ("no_wear", 0.2),
                                                                    ("no_wear", 0.3), ("wear", 0.75)]),
    }
    for flags, (sent, detections) in cases.items():
        run = tmp_path / f"run{len(flags)}{''.join(flags)}"
        run.mkdir()
        receiver = Receiver()
        try:
            summary = _cli_agent(run, model, receiver, *flags)
        finally:
            receiver.close()
        assert summary["frames"] == 4 and summary["alerts"]["sent"] == sent == len(receiver.accepted()), flags
        expected = {} if "--confidence" in flags else {"helmet": 0.3, "no_helmet": 0.08, "wear": 0.7}
        assert summary["thresholds"] == expected, flags
        uploads = spooled_detections(run / "spool")
        assert len(uploads) == 4 and all(u == detections for u in uploads), (flags, uploads)


def test_the_agent_cli_without_thresholds_in_the_model_keeps_the_old_defaults(tmp_path: Path) -> None:
    model = planted_onnx(tmp_path / "m.onnx", [*ROWS, (60, 60, 8, 8, 3, 0.86)])  # wear at 0.75 and at 0.86
    receiver = Receiver()
    try:
        summary = _cli_agent(tmp_path, model, receiver)
    finally:
        receiver.close()
    assert summary["thresholds"] == {}
    [alert] = receiver.accepted()  # only the box over 0.85 alerts
    assert alert["payload"]["confidence"] == pytest.approx(0.86)
    assert all(u == [("no_wear", 0.3), ("wear", 0.75), ("wear", 0.86)] for u in spooled_detections(tmp_path / "spool"))


def test_the_agent_cli_refuses_a_confidence_outside_the_unit_interval_and_a_band_over_a_class_threshold(
    tmp_path: Path,
) -> None:
    from flows.cli import app

    model = planted_onnx(tmp_path / "m.onnx", ROWS, thresholds=THRESHOLDS)
    base = ["agent", "--source", str(tmp_path), "--model", str(model), "--server", "http://127.0.0.1:9",
            "--token", "t", "--device", "cam-a", "--spool", str(tmp_path / "spool")]
    cases = {
        ("--confidence", "1.5"): "--confidence 1.5 must lie in (0, 1)",
        # no_helmet's own threshold is 0.08: an explicit band up to 0.25 covers evidence that already has a box.
        ("--watch-classes", "no_helmet", "--rare-band", "0.001,0.25"): "--rare-band high 0.25 lies above the "
                                                                       "detection threshold 0.08 of no_helmet",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(app, [*base, *args], env={**os.environ, "COLUMNS": "200"})
        text = " ".join((result.output + getattr(result, "stderr", "")).split())
        assert result.exit_code == 2 and message in text, (args, text)
