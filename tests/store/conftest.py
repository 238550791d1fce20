"""Fixtures for the store tests: a fresh local object store and catalog per test, record
makers, and a runner that starts real OS processes at the same moment."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

import pytest

from edge.protocol import CaptureMeta, Detection, Heartbeat, SourceRef
from store.catalog import Catalog
from store.inbox import CaptureRecord, HeartbeatRecord, Inbox
from store.objects import ObjectStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Scripts given to run_together start with this: they say "ready" once imported, then
# wait for "go", so that the processes really do overlap.
READY_GO = 'import sys\nprint("ready", flush=True)\nsys.stdin.readline()\n'


@pytest.fixture
def objects(tmp_path) -> ObjectStore:
    return ObjectStore(tmp_path / "store", fsync=False)  # fsync is tested in test_objects


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(tmp_path / "catalog.duckdb")


@pytest.fixture
def inbox(objects) -> Inbox:
    return Inbox(objects)


@pytest.fixture
def make_capture() -> Callable[..., CaptureRecord]:
    def make(i: int, device: str = "jetson-1", triggers: Sequence[str] = ("uncertainty",)) -> CaptureRecord:
        sha = hashlib.sha256(f"image {i}".encode()).hexdigest()
        meta = CaptureMeta(
            device=device,
            camera="cam0",
            captured_at=T0 + timedelta(seconds=i),
            frame_width=640,
            frame_height=480,
            model_version="m1",
            detections=[
                Detection(xyxy=(10, 10, 50, 60), confidence=0.41, class_id=0, class_name="person"),
                Detection(xyxy=(100, 100, 200, 220), confidence=0.5, class_id=3),
            ],
            triggers=list(triggers),
            source=SourceRef(uri="rtsp://cam0/stream", frame_index=i, timestamp_s=i / 30),
        )
        return CaptureRecord(id=sha, sha256=sha, received_at=T0, media_type="image/jpeg", bytes=1000 + i, meta=meta)

    return make


@pytest.fixture
def make_heartbeat() -> Callable[..., HeartbeatRecord]:
    def make(i: int, device: str = "jetson-1") -> HeartbeatRecord:
        hb = Heartbeat(
            device=device,
            sent_at=T0 + timedelta(minutes=i),
            model_version="m1",
            fps=29.5,
            inference_ms_p50=8.0,
            inference_ms_p99=15.0,
            queue_depth=i,
        )
        return HeartbeatRecord(heartbeat=hb)

    return make


@pytest.fixture
def run_together() -> Callable[[str, list[list[str]]], list[str]]:
    """Run `READY_GO + script` once per argv list, all released at once; return their stdouts."""

    def run(script: str, argvs: list[list[str]]) -> list[str]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", READY_GO + script, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for argv in argvs
        ]
        try:
            for p in procs:
                assert p.stdout.readline() == "ready\n", p.stderr.read()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            results = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (_, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err
        return [out for out, _ in results]

    return run
