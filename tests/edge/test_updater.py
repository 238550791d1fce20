"""The device's model updater against a real API on loopback, with real PPE models in ONNX Runtime: the
agent's frame loop is driven frame by frame here while the updater's thread downloads, builds and checks.

Nothing is timed: each test steps frames until the state it waits for (bounded by a deadline), then
looks at what the loop did frame by frame (`models_run`) and what lies on disk; where a test uploads every
frame, the captures the API received say which model ran which frame without the agent's own account.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.agent import Agent, AgentConfig
from edge.alerts import AlertConfig
from edge.client import IngestClient
from edge.detectors.load import load_detector
from edge.detectors.metadata import file_sha256
from edge.detectors.onnx_runtime import OnnxDetector
from edge.frames import Frame
from edge.model_build import reference_mismatch, thresholds_mismatch
from edge.protocol import (
    ArtifactManifest, CaptureMeta, ReferenceDetection, ReferenceFrame, ReferenceSet, SourceRef, utc_now,
)
from edge.sources import VideoFileSource
from edge.triggers import Decision, TriggerConfig
from edge.updater import INSTALLED, ModelUpdater, UpdaterConfig
from feedback.ingest.serving import BackgroundServer
from feedback.rollout.deployments import pin_device, unpin_device
from feedback.rollout.publish import reference_set
from store.devices import add_device
from store.inbox import CAPTURES, HEARTBEATS, CaptureRecord, HeartbeatRecord
from tests.edge.artifact_link import ArtifactLink
from tests.edge.manual_clock import ManualClock
from tests.edge.planted_model import PPE, head, planted_onnx, with_thresholds
from tests.edge.test_alerts import SECRET as ALERT_SECRET
from tests.edge.test_alerts import Receiver
from tests.feedback.rollout.artifacts import artifact, frames, holdout_workspace, parity_of

DEVICE = "cam-u"
DEADLINE_FRAMES = 3000  # far more than any step here needs, on the slowest machine we run on
# The "thresholded" artifact's per-class operating points: helmet above, no_wear below the global 0.25.
THRESHOLDS = {"helmet": 0.4, "no_wear": 0.15}
# Every frame a hard example, and only its own: no budget, no dedup, no flicker (which uploads the frame before).
EVERY_FRAME = TriggerConfig(random_rate=1.0, budget_per_hour=1e9, budget_burst=10_000, dedup_memory=0,
                            flicker_enabled=False)


def raising_on_bright_frames(path: Path, limit: float = 0.6) -> Path:
    """A PPE-classed detector at imgsz 320 that answers a dark frame (no pixel above `limit` x 255) with two
    planted boxes and makes ONNX Runtime raise on any brighter one: the frame's brightest pixel picks the index
    of a Gather from a one-element tensor, 0 when dark, 7 (out of bounds, an INVALID_ARGUMENT at run time)
    when bright. A real model, valid to the ONNX checker, that fails on some frames and not on others."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    planted = head([(100, 100, 40, 40, 0, 0.9), (220, 160, 50, 60, 3, 0.8)], len(PPE))
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Greater", ["peak", "limit"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["flag"], to=TensorProto.INT64),
        helper.make_node("Mul", ["flag", "past_the_end"], ["index"]),
        helper.make_node("Gather", ["nothing", "index"], ["zero"]),
        helper.make_node("Add", ["planted", "zero"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "raising_on_bright_frames",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(planted.shape))],
        initializer=[numpy_helper.from_array(planted, "planted"),
                     numpy_helper.from_array(np.array(limit, dtype=np.float32), "limit"),
                     numpy_helper.from_array(np.array(7, dtype=np.int64), "past_the_end"),
                     numpy_helper.from_array(np.zeros(1, dtype=np.float32), "nothing")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"names": repr(PPE), "imgsz": "[320, 320]", "stride": "32", "task": "detect"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def marked(image: np.ndarray, index: int, test: int) -> np.ndarray:
    """`image` with its frame index and the test's number written in a dark 8x24 corner, so that no two frames
    encode alike, here or in another test on the same API: it keeps one capture per image sha256, and each
    frame's capture must reach it. Dark stays dark (values < 97)."""
    out = image.copy()
    out[:8, :8], out[:8, 8:16], out[:8, 16:24] = index % 97, index // 97 % 97, test % 97
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path) -> Iterator[dict]:
    """A served workspace with one good artifact and one of each kind a device must refuse."""
    ws = holdout_workspace(tmp_path_factory.mktemp("updater"), ppe_dir, n=2, registry_ttl_s=0.0)
    parity = parity_of(ppe_pt, ppe_onnx, ppe_dir)

    def make(label: str, **kwargs: object):
        return artifact(ws, ppe_onnx, label, parity, ppe_dir, **kwargs)  # type: ignore[arg-type]

    good = reference_set(ppe_onnx, frames(ppe_dir), 3)
    shifted = ReferenceSet(**{**good.model_dump(), "frames": [f.model_copy(update={"detections": [
        ReferenceDetection(xyxy=(d.xyxy[0] + 15, d.xyxy[1], d.xyxy[2] + 15, d.xyxy[3]), confidence=d.confidence,
                           class_id=d.class_id) for d in f.detections]}) for f in good.frames]})
    assert any(f.detections for f in shifted.frames)
    dark = tmp_path_factory.mktemp("dark") / "dark.png"
    cv2.imwrite(str(dark), np.zeros((320, 320, 3), np.uint8))
    raising = raising_on_bright_frames(tmp_path_factory.mktemp("raising") / "raising.onnx")
    arts = {
        "next": make("next"),
        # Passes every check the device makes (its reference frame is dark), then raises on a camera's frame.
        "raises_on_bright": artifact(ws, raising, "raises_on_bright", parity, ppe_dir,
                                     reference=reference_set(raising, [dark], 1)),
        "corrupt": make("corrupt"),
        "truncated": make("truncated"),
        "not_onnx": make("not_onnx", onnx_bytes=b"these bytes are no ONNX model\n" * 5000),
        "wrong_classes": make("wrong_classes", classes=["person", "car", "bike", "dog"]),
        "bad_reference": make("bad_reference", reference=shifted),
        # The same weights stamped with per-class thresholds, as the control plane will publish them.
        "thresholded": artifact(ws, with_thresholds(ppe_onnx, tmp_path_factory.mktemp("stamped") / "ppe.onnx",
                                                    THRESHOLDS), "thresholded", parity, ppe_dir),
    }
    # The blob store damaged under a published manifest: flipped bytes, and half the file gone.
    corrupt = ws.blobs.local_path(arts["corrupt"].onnx_sha256)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    corrupt.write_bytes(bytes(data))
    truncated = ws.blobs.local_path(arts["truncated"].onnx_sha256)
    truncated.write_bytes(truncated.read_bytes()[: arts["truncated"].onnx_bytes // 2])
    token = add_device(ws.catalog, ws.objects, DEVICE)
    video = VideoFileSource(ppe_dir / "pool_stream.mp4")
    images = [next(iter(video)).image for _ in range(6)]
    video.close()
    with BackgroundServer(ws.settings) as url:
        yield {"ws": ws, "url": url, "token": token, "installed": ppe_onnx, "images": images, **arts}


@pytest.fixture
def deploy(site: dict) -> Iterator[Callable[[str | None], None]]:
    """`deploy(name)` makes the API answer this device with artifact `name` (None: no model named)."""
    def to(name: str | None) -> None:
        if name is None:
            unpin_device(site["ws"], DEVICE)
        else:
            pin_device(site["ws"], DEVICE, site[name].model_version)
    yield to
    try:
        unpin_device(site["ws"], DEVICE)
    except ValueError:
        pass  # not pinned


class Device:
    """The agent's frame loop on frames with contiguous indices, stepped by the test."""

    def __init__(self, site: dict, model_dir: Path, server: str | None = None, installed: Path | None = None,
                 *, triggers: TriggerConfig | None = None, alerts: AlertConfig | None = None, camera: str = "cam0",
                 **options: object) -> None:
        # A budget no model misses unless a test sets one: this machine's load is not the model's fault.
        options = {"latency_budget_ms": 60_000.0, **options}
        config = UpdaterConfig(server=server or site["url"], token=site["token"], model_dir=model_dir,
                               poll_s=0.05, probation_frames=4, **options)  # type: ignore[arg-type]
        self.updater = ModelUpdater(config, installed=installed or site["installed"])
        detector = self.updater.initial_detector()
        self.agent = Agent(AgentConfig(server=site["url"], token=site["token"], device=DEVICE,
                                       camera=camera, spool_dir=model_dir.parent / "spool",
                                       triggers=triggers or TriggerConfig(), alerts=alerts), detector, [], self.updater)
        self.images, self.index = site["images"], 0
        self.frame_at: Callable[[int], np.ndarray] = lambda i: self.images[i % len(self.images)]
        self.states: Counter[str] = Counter()  # the update state seen before each frame
        self.decisions: dict[int, Decision] = {}  # what the miner chose to upload, by frame

    def __enter__(self) -> Device:
        self.updater.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.close()

    def step(self) -> None:
        self.states[self.updater.report()[0]] += 1
        frame = self.frame_at(self.index)
        decision = self.agent.step(Frame(frame, self.index, 0.0, utc_now(), SourceRef(uri="test", frame_index=self.index)))
        if decision is not None:
            self.decisions[decision.frame_index] = decision
        self.index += 1

    def until(self, condition: Callable[[], bool], what: str) -> None:
        for _ in range(DEADLINE_FRAMES):
            if condition():
                return
            self.step()
        pytest.fail(f"{what} did not happen within {DEADLINE_FRAMES} frames; update state {self.updater.report()}")

    @property
    def version(self) -> str:
        return self.agent.detector.model_version

    def runs(self) -> list[tuple[str, int, int]]:
        return [(r["model_version"], r["first_frame"], r["last_frame"]) for r in self.agent.status()["models_run"]]


def contiguous(runs: list[tuple[str, int, int]], frames: int) -> bool:
    """Every frame 0..frames-1 run by exactly one model, in order."""
    return runs[0][1] == 0 and runs[-1][2] == frames - 1 and all(b[1] == a[2] + 1 for a, b in itertools.pairwise(runs))


def test_a_checked_model_is_swapped_in_between_two_frames_while_the_loop_runs_on(site, deploy, tmp_path) -> None:
    nxt = site["next"]
    with Device(site, tmp_path / "models") as device:
        installed = device.version
        device.until(lambda: device.updater.polls > 0, "a first poll")
        deploy("next")
        device.until(lambda: device.version == nxt.model_version, "the swap")
        # The loop went on running the old model while the new one was fetched, built and checked.
        assert device.states["downloading"] + device.states["building"] + device.states["verifying"] > 0
        # ...through each of those phases, not the download alone: the updater waits for a frame to end before
        # each MiB it writes, before it builds, and before each of its reference frames, so frames run in each.
        assert device.states["downloading"] > 0, device.states
        assert device.states["building"] > 0, device.states
        assert device.states["verifying"] > 0, device.states
        device.until(lambda: device.updater.report() == ("idle", None, None), "the end of probation")
        runs = device.runs()
        assert [r[0] for r in runs] == [installed, nxt.model_version] and contiguous(runs, device.index)
    model_dir = tmp_path / "models"
    state = (model_dir / "state.json").read_text()
    assert f'"current": "{nxt.onnx_sha256}"' in state and f'"previous": "{INSTALLED}"' in state
    assert file_sha256(model_dir / "models" / nxt.onnx_sha256 / "model.onnx") == nxt.onnx_sha256
    assert not list((model_dir / "downloads").iterdir())  # nothing half-fetched is left behind


@pytest.mark.parametrize(("bad", "why"), [
    ("corrupt", "sha256 does not match"),
    ("truncated", r"truncated: \d+ of \d+ bytes"),
    ("not_onnx", "it does not load"),
    ("wrong_classes", r"classes \['person', 'car', 'bike', 'dog'\] are not the running model's"),
    ("bad_reference", r"failed its reference check: reference frame .*no partner within 2.0 px"),
])
def test_a_bad_artifact_is_refused_and_the_running_model_keeps_running(site, deploy, tmp_path, bad, why) -> None:
    with Device(site, tmp_path / "models") as device:
        running, version = device.agent.detector, device.version
        deploy(bad)
        device.until(lambda: device.updater.report()[0] == "refused", "the refusal")
        _, target, detail = device.updater.report()
        assert target == site[bad].model_version and re.search(why, detail or ""), detail
        polls = device.updater.polls
        device.until(lambda: device.updater.polls >= polls + 2, "two more polls")  # and it is not tried again
        assert device.agent.detector is running and device.runs() == [(version, 0, device.index - 1)]
        assert device.updater.report()[0] == "refused"
    models = tmp_path / "models"
    assert not (models / "models" / site[bad].onnx_sha256).exists()
    assert site[bad].onnx_sha256 in (models / "state.json").read_text()  # remembered across restarts
    assert not list((models / "downloads").glob(f"{site[bad].onnx_sha256}*"))


def test_a_model_over_its_latency_budget_is_rolled_back_by_the_device(site, deploy, tmp_path) -> None:
    nxt = site["next"]
    with Device(site, tmp_path / "models", latency_budget_ms=0.001) as device:
        installed = device.version
        deploy("next")
        device.until(lambda: device.updater.report()[0] == "rolled_back", "the rollback")
        _, target, detail = device.updater.report()
        assert target == nxt.model_version and "exceeds the budget of 0.0 ms" in (detail or "")
        polls = device.updater.polls
        device.until(lambda: device.updater.polls >= polls + 2, "two more polls")
        runs = device.runs()
        assert [r[0] for r in runs] == [installed, nxt.model_version, installed] and contiguous(runs, device.index)
        assert runs[1][2] - runs[1][1] + 1 == 4  # its probation (probation_frames), then straight back
    assert f'"current": "{INSTALLED}"' in (tmp_path / "models" / "state.json").read_text()


def spooled(device: Device) -> list[CaptureMeta]:
    """Every capture the agent left on disk for upload, read back from the spool's files."""
    return [CaptureMeta.model_validate_json(e.meta_json) for e in device.agent.spool.next_batch(1_000_000)]


def received(site: dict, camera: str) -> list[CaptureMeta]:
    """The captures of `camera` the API on loopback accepted: its inbox records."""
    objects = site["ws"].objects
    records = [CaptureRecord.model_validate_json(objects.get(key)) for key in objects.list(CAPTURES)]
    return [r.meta for r in records if r.meta.camera == camera]


def by_frame(captures: list[CaptureMeta]) -> list[tuple[int, str]]:
    """(frame index, model version) of each capture, in frame order."""
    return sorted((c.source.frame_index, c.model_version) for c in captures)  # type: ignore[misc]


def test_a_new_model_that_raises_on_a_frame_is_rolled_back_and_that_frame_run_again_on_the_old_one(
    site, deploy, tmp_path
) -> None:
    """Judged from what reached the API (each frame's capture, the heartbeat) and the device's disk, not from
    the agent's own counters: the frame the new model raised on was still run, by the old model, as was every
    frame after it, and the device says why it went back."""
    raising, camera = site["raises_on_bright"], "raise-on-probation"
    dark = np.zeros((320, 320, 3), np.uint8)
    with Device(site, tmp_path / "models", triggers=EVERY_FRAME, camera=camera) as device:
        installed = device.version
        device.frame_at = lambda i: marked(dark, i, 1)
        deploy("raises_on_bright")
        device.until(lambda: device.version == raising.model_version, "the swap")
        swapped_at = device.index - 1  # the new model ran that frame (a dark one)...
        device.step()  # ...and this one: two of its four probation frames
        failed_at = device.index
        device.frame_at = lambda i: marked(device.images[i % len(device.images)], i, 1)  # a camera's: it raises
        device.step()
        polls = device.updater.polls
        device.until(lambda: device.updater.polls >= polls + 2 and device.index >= failed_at + 8,
                     "two more polls and a few frames")
        frames = device.index
        on_disk = spooled(device)
        device.agent.uploader.start()  # its first heartbeat goes out at once, then the captures
        assert device.agent.uploader.flush(60), device.agent.uploader.stats()
    # One capture per frame, none lost, none twice; the new model's only for the two dark frames it ran.
    expected = [(i, raising.model_version if swapped_at <= i < failed_at else installed) for i in range(frames)]
    assert by_frame(on_disk) == expected
    assert by_frame(received(site, camera)) == expected
    assert {c.update_state for c in on_disk if c.source.frame_index >= failed_at} == {"rolled_back"}
    # The heartbeat the API received reports the rollback, its reason and the one error, on the old model.
    objects = site["ws"].objects
    beats = [HeartbeatRecord.model_validate_json(objects.get(k)).heartbeat for k in objects.list(HEARTBEATS)]
    beats = [b for b in beats if b.update_target == raising.model_version]
    assert beats, "no heartbeat named the model that raised"
    beat = beats[-1]
    assert (beat.update_state, beat.model_version, beat.errors) == ("rolled_back", installed, 1)
    assert re.search(r"it raised \w+ on a frame: .*Gather", beat.update_detail or ""), beat.update_detail
    # And on disk: the old model is what runs, at the next start too; the one that raised is refused.
    state = json.loads((tmp_path / "models" / "state.json").read_text())
    assert state["current"] == INSTALLED and state["update_state"] == "rolled_back"
    assert "Gather" in state["refused"][raising.onnx_sha256]


def test_no_frame_is_dropped_or_repeated_across_a_swap_judged_by_the_captures_uploaded(site, deploy, tmp_path) -> None:
    """Every frame is a hard example here, so the captures themselves tell which model ran which frame: their
    frame indices run 0..N-1 with no gap and no repeat, and their model version changes exactly once."""
    nxt, camera = site["next"], "swap-every-frame"
    with Device(site, tmp_path / "models", triggers=EVERY_FRAME, camera=camera) as device:
        installed = device.version
        device.frame_at = lambda i: marked(device.images[i % len(device.images)], i, 2)
        device.until(lambda: device.updater.polls > 0, "a first poll")
        deploy("next")
        device.until(lambda: device.version == nxt.model_version, "the swap")
        device.until(lambda: device.updater.report() == ("idle", None, None), "the end of probation")
        for _ in range(3):
            device.step()
        frames, runs = device.index, device.runs()
        on_disk = spooled(device)
        device.agent.uploader.start()
        assert device.agent.uploader.flush(60), device.agent.uploader.stats()
    for captures in (on_disk, received(site, camera)):
        indexed = by_frame(captures)
        assert [i for i, _ in indexed] == list(range(frames))
        versions = [v for _, v in indexed]
        switches = [i for i in range(1, frames) if versions[i] != versions[i - 1]]
        assert len(switches) == 1 and (versions[0], versions[-1]) == (installed, nxt.model_version), switches
        assert 0 < switches[0] < frames - 4  # the old model ran frames before it, the new one its probation after
        assert switches[0] == runs[1][1]  # and the agent's own account of the swap agrees with its captures


def test_no_model_named_sends_the_device_back_to_its_installed_model(site, deploy, tmp_path) -> None:
    with Device(site, tmp_path / "models") as device:
        installed = device.version
        deploy("next")
        device.until(lambda: device.version == site["next"].model_version, "the swap")
        deploy(None)
        device.until(lambda: device.version == installed, "the swap back")
        runs = device.runs()
        assert [r[0] for r in runs] == [installed, site["next"].model_version, installed]
        assert contiguous(runs, device.index)
    # The way back to the model it left is kept on disk.
    assert (tmp_path / "models" / "models" / site["next"].onnx_sha256 / "model.onnx").exists()


def test_a_device_installed_with_the_deployed_file_itself_fetches_nothing(site, deploy, tmp_path) -> None:
    nxt = site["next"]
    installed = tmp_path / "installed.onnx"
    installed.write_bytes(site["ws"].blobs.get(nxt.onnx_sha256))
    with Device(site, tmp_path / "models", installed=installed) as device:
        running = device.agent.detector
        deploy("next")
        device.until(lambda: (device.updater.told() or {}).get("model_version") == nxt.model_version,
                     "the answer naming it")
        polls = device.updater.polls
        device.until(lambda: device.updater.polls >= polls + 2, "two more polls")
        assert device.agent.detector is running and device.updater.downloaded_bytes == 0
        assert device.updater.report() == ("idle", None, None)


def test_a_restart_runs_the_last_good_model_and_never_a_damaged_one(site, deploy, tmp_path) -> None:
    nxt, model_dir = site["next"], tmp_path / "models"
    with Device(site, model_dir) as device:
        deploy("next")
        device.until(lambda: device.updater.report() == ("idle", None, None) and
                     device.version == nxt.model_version, "the swap")
    restarted = ModelUpdater(UpdaterConfig(server=site["url"], token=site["token"], model_dir=model_dir),
                             installed=site["installed"])
    assert restarted.initial_detector().model_version == nxt.model_version  # no new download, no new check
    onnx = model_dir / "models" / nxt.onnx_sha256 / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])  # the disk lost most of it
    damaged = ModelUpdater(UpdaterConfig(server=site["url"], token=site["token"], model_dir=model_dir),
                           installed=site["installed"])
    assert damaged.initial_detector().model_version == OnnxDetector(site["installed"]).model_version
    assert not onnx.parent.exists()


def _below(decision: Decision, name: str, limit: float) -> int:
    """How many `name` boxes under `limit` the frame of `decision` carried."""
    dets = decision.detections
    if len(dets) == 0:  # the tracker answers a frame without boxes with bare Detections
        return 0
    return int(((dets.data["class_name"] == name) & (dets.confidence < limit)).sum())


def test_a_swapped_in_models_thresholds_apply_from_its_first_frame_and_an_old_manifest_reverts_them(
    site, deploy, tmp_path
) -> None:
    stamped, old = site["thresholded"], site["next"]
    assert stamped.thresholds is None and old.thresholds is None  # the publisher does not announce them (yet)
    every_frame = TriggerConfig(random_rate=1.0, budget_per_hour=1e9, budget_burst=10_000, dedup_memory=0,
                                flicker_enabled=False)
    receiver = Receiver()
    alerts = AlertConfig(receiver.url, ALERT_SECRET, {"helmet"}, backoff_base_s=0.01)
    try:
        with Device(site, tmp_path / "models", triggers=every_frame, alerts=alerts) as device:
            installed = device.version
            device.until(lambda: device.index >= 8, "a few frames on the installed model")
            deploy("thresholded")
            device.until(lambda: device.version == stamped.model_version, "the swap to the stamped model")
            assert device.agent.status()["thresholds"] == THRESHOLDS
            assert device.agent.miner.uncertainty_band_of(0) == pytest.approx((0.4, 0.75))
            device.until(lambda: device.updater.report() == ("idle", None, None), "the end of probation")
            device.step()
            deploy("next")  # an artifact whose manifest predates thresholds, of a model without them
            device.until(lambda: device.version == old.model_version, "the swap to the old manifest's model")
            assert device.agent.status()["thresholds"] == {}
            assert device.agent.miner.uncertainty_band_of(0) == (0.25, 0.6)
            device.until(lambda: device.updater.report() == ("idle", None, None), "the end of its probation")
            device.step()
            runs = device.runs()
            decisions = dict(device.decisions)
        alerted = receiver.accepted()
    finally:
        receiver.close()
    assert [r[0] for r in runs] == [installed, stamped.model_version, old.model_version]
    assert contiguous(runs, device.index)
    by_model = {version: [decisions[i] for i in range(first, last + 1)] for version, first, last in runs}
    assert all(len(frames) == last - first + 1 for (_, first, last), frames in zip(runs, by_model.values()))
    plain, per_class, reverted = (by_model[v] for v in (installed, stamped.model_version, old.model_version))
    # Detections: the stamped model's very first frame has no helmet under 0.4; no_wear appears under 0.25.
    assert _below(per_class[0], "helmet", 0.4) == 0 and all(_below(d, "helmet", 0.4) == 0 for d in per_class)
    assert sum(_below(d, "no_wear", 0.25) for d in per_class) > 0
    for before in (plain, reverted):
        assert all(_below(d, "helmet", 0.4) > 0 for d in before)  # helmets at 0.25-0.4 on every frame here
        assert sum(_below(d, "no_wear", 0.25) for d in before) == 0
    # Triggers: the uncertainty band is each class's own while the stamped model runs, the default around it.
    unsure = {id(d): next((r for r in d.reasons if r.startswith("uncertainty")), "") for d in decisions.values()}
    assert all("each class's band" in unsure[id(d)] for d in per_class if unsure[id(d)])
    assert all("[0.25, 0.6)" in unsure[id(d)] for d in plain + reverted if unsure[id(d)])
    assert any(unsure[id(d)] for d in per_class) and any(unsure[id(d)] for d in plain + reverted)
    # Alerts: a helmet under the default 0.85 alerts only while its class's own threshold, 0.4, applies.
    first, last = runs[1][1], runs[1][2]
    assert alerted and all(first <= a["payload"]["frame_index"] <= last for a in alerted)
    assert all(a["payload"]["class_name"] == "helmet" and 0.4 <= a["payload"]["confidence"] < 0.85 for a in alerted)


def test_a_manifest_announcing_thresholds_must_match_the_models_own(tmp_path) -> None:
    rows = [(10, 10, 8, 8, 1, 0.1)]
    stamped = load_detector(planted_onnx(tmp_path / "s.onnx", rows, thresholds={"no_helmet": 0.08, "wear": 0.7}))
    plain = load_detector(planted_onnx(tmp_path / "p.onnx", rows))
    manifest = ArtifactManifest(model_version="m", onnx_sha256="a" * 64, onnx_bytes=1, reference_sha256="b" * 64,
                                reference_bytes=1, classes=["helmet", "no_helmet", "no_wear", "wear"],
                                input_size=(64, 64), published_at=utc_now())
    assert thresholds_mismatch(stamped, manifest) is None and thresholds_mismatch(plain, manifest) is None  # old
    announced = manifest.model_copy(update={"thresholds": {"no_helmet": 0.08, "wear": 0.7}})
    assert thresholds_mismatch(stamped, announced) is None
    assert "are not the manifest's" in (thresholds_mismatch(plain, announced) or "")
    other = manifest.model_copy(update={"thresholds": {"no_helmet": 0.08, "wear": 0.75}})
    assert "'wear': 0.7}" in (thresholds_mismatch(stamped, other) or "")
    # A device that ignores the model's thresholds (--confidence) still refuses a self-contradicting artifact.
    overridden = load_detector(tmp_path / "s.onnx", class_thresholds=False)
    assert thresholds_mismatch(overridden, announced) is None and thresholds_mismatch(overridden, other)


def _reference(detections: list[tuple[int, float, tuple[float, float, float, float]]], conf: float = 0.25) -> ReferenceSet:
    ok, png = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))
    assert ok
    frame = ReferenceFrame(name="f.png", png_base64=base64.b64encode(png.tobytes()).decode(), detections=[
        ReferenceDetection(xyxy=xyxy, confidence=c, class_id=k) for k, c, xyxy in detections])
    return ReferenceSet(conf=conf, iou=0.7, box_tol_px=2.0, conf_tol=0.02, frames=[frame])


def test_the_reference_check_compares_each_class_where_device_and_publisher_both_keep_boxes(tmp_path) -> None:
    # helmet 0.28 (its threshold 0.3), no_helmet 0.1 (0.08), no_wear 0.4 and wear 0.75 (no threshold).
    rows = [(10, 10, 8, 8, 0, 0.28), (30, 10, 8, 8, 1, 0.1), (50, 10, 8, 8, 2, 0.4), (40, 40, 12, 12, 3, 0.75)]
    model = planted_onnx(tmp_path / "m.onnx", rows, thresholds={"helmet": 0.3, "no_helmet": 0.08})
    # What a publisher's ONNX Runtime found at the global 0.25, the model's thresholds unapplied.
    reference = _reference([(0, 0.28, (6, 6, 14, 14)), (2, 0.4, (46, 6, 54, 14)), (3, 0.75, (34, 34, 46, 46))])
    assert reference_mismatch(load_detector(model), reference) is None  # its own thresholds: helmet 0.28 gone
    assert reference_mismatch(load_detector(model, conf=0.5, class_thresholds=False), reference) is None  # --confidence
    # A publisher that applied the thresholds recorded no_helmet 0.1 and no helmet 0.28; a device at
    # --confidence 0.1 sees that helmet, under the model's own threshold, where the reference could not.
    applied = _reference([(1, 0.1, (26, 6, 34, 14)), (2, 0.4, (46, 6, 54, 14)), (3, 0.75, (34, 34, 46, 46))])
    assert reference_mismatch(load_detector(model), applied) is None
    assert reference_mismatch(load_detector(model, conf=0.1, class_thresholds=False), applied) is None
    # ...and a real difference is still found: wear moved by 5 px, well above every threshold.
    moved = _reference([(0, 0.28, (6, 6, 14, 14)), (2, 0.4, (46, 6, 54, 14)), (3, 0.75, (39, 34, 51, 46))])
    assert "no partner within 2.0 px" in (reference_mismatch(load_detector(model), moved) or "")


class FlakyLink(ArtifactLink):
    """A TCP proxy in front of the API that cuts the first response to GET `path` after `cut` bytes and
    records the Range header of every request for `path`."""

    def __init__(self, upstream: str, path: str, cut: int) -> None:
        self.cut, self.cuts = cut, 0
        super().__init__(upstream, path)

    def _connection(self) -> dict:
        return {"on": False, "sent": 0}

    def _requests(self, src: socket.socket, dst: socket.socket, watch: dict) -> None:
        while data := _recv(src):
            if self._asks_for_path(data):
                watch["on"], watch["sent"] = self.cuts == 0, 0
            dst.sendall(data)
        dst.close()

    def _responses(self, src: socket.socket, dst: socket.socket, watch: dict) -> None:
        while data := _recv(src):
            if watch["on"] and watch["sent"] + len(data) >= self.cut:
                dst.sendall(data[: self.cut - watch["sent"]])
                self.cuts += 1
                watch["on"] = False
                for s in (src, dst):
                    s.shutdown(socket.SHUT_RDWR)
                return
            watch["sent"] += len(data)
            dst.sendall(data)
        dst.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def test_a_download_cut_off_resumes_where_it_stopped(site, deploy, tmp_path) -> None:
    nxt = site["next"]
    link = FlakyLink(site["url"], f"/v1/artifacts/{nxt.onnx_sha256}", cut=3_000_000)
    try:
        with Device(site, tmp_path / "models", server=link.url) as device:
            deploy("next")
            device.until(lambda: device.version == nxt.model_version, "the swap")
            assert link.cuts == 1 and link.ranges[0] is None
            resumed = int(re.fullmatch(r"bytes=(\d+)-", link.ranges[1])[1])  # type: ignore[index]
            assert 2_990_000 < resumed < 3_000_000  # after what had arrived, the response's headers aside
            # Every byte crossed the link once: the resumed request asked only for the rest.
            assert device.updater.downloaded_bytes == nxt.onnx_bytes + nxt.reference_bytes
    finally:
        link.close()


def test_a_download_yields_to_the_frame_loop_before_it_starts_and_after_every_mib(site, deploy, tmp_path) -> None:
    """The updater passes `pace` (wait for the gap after a frame) so that a download never takes the cores in one
    go: it runs before the request and then each time another MiB has been written, never after less."""
    nxt, dest = site["next"], tmp_path / "next.part"
    deploy("next")
    written: list[int] = []  # the bytes on disk at each pace call
    client = IngestClient(site["url"], site["token"])
    try:
        got = client.download(nxt.onnx_sha256, dest, limit=nxt.onnx_bytes,
                              pace=lambda: written.append(dest.stat().st_size if dest.exists() else 0))
    finally:
        client.close()
    assert got == nxt.onnx_bytes and file_sha256(dest) == nxt.onnx_sha256
    assert written[0] == 0  # before the first byte is asked for
    steps = [b - a for a, b in itertools.pairwise(written)]
    # On disk may lag what was written by the file object's buffer, at either end of a step.
    assert steps and all(step >= (1 << 20) - io.DEFAULT_BUFFER_SIZE for step in steps)
    assert nxt.onnx_bytes - written[-1] < 2 << 20  # and it kept pacing to the end
    assert len(written) - 1 >= nxt.onnx_bytes // (2 << 20)


def test_polls_are_spread_by_jitter(site, tmp_path) -> None:
    clock = ManualClock()
    updater = ModelUpdater(UpdaterConfig(server=site["url"], token=site["token"], model_dir=tmp_path / "m",
                                         poll_s=10.0, jitter=0.2),
                           installed=site["installed"], clock=clock.now, wait=clock.wait, rng=random.Random(7))
    updater.initial_detector()
    updater.start()
    try:
        done = threading.Event()
        for _ in range(2000):
            if len(clock.waits) >= 8:
                break
            done.wait(0.01)  # the updater's thread runs on its own; this only yields to it
        waits = clock.waits[:8]
    finally:
        updater.stop()
    assert len(waits) == 8 and all(8.0 <= w <= 12.0 for w in waits) and len(set(waits)) == 8


# -- TensorRT (GPU only) ------------------------------------------------------------------------


def _gpu_skip_reason() -> str | None:
    from edge.model_build import tensorrt_usable

    return None if tensorrt_usable() else "needs TensorRT and an NVIDIA GPU (TensorRT does not import or sees none)"


@pytest.mark.gpu
def test_tensorrt_engine_is_built_on_the_device_checked_cached_and_swapped_in(site, deploy, tmp_path) -> None:
    if reason := _gpu_skip_reason():
        pytest.skip(reason)
    nxt, model_dir = site["next"], tmp_path / "models"
    with Device(site, model_dir, backend="tensorrt") as device:
        deploy("next")
        device.until(lambda: device.version == nxt.model_version, "the swap to the engine")
        assert type(device.agent.detector).__name__ == "TensorRTDetector"
        device.until(lambda: device.updater.report() == ("idle", None, None), "the end of probation")
        assert contiguous(device.runs(), device.index)
    engines = sorted((model_dir / "engines").glob("*.engine"))
    assert len(engines) == 1 and engines[0].name.startswith(nxt.onnx_sha256[:16])
    built = engines[0].stat().st_mtime_ns
    restarted = ModelUpdater(UpdaterConfig(server=site["url"], token=site["token"], model_dir=model_dir,
                                           backend="tensorrt"), installed=site["installed"])
    assert restarted.initial_detector().model_version == nxt.model_version
    assert engines[0].stat().st_mtime_ns == built  # the cached engine, not a new build
