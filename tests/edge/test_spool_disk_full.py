"""The agent's spool on a disk that really fills up: a 1 MiB tmpfs answering ENOSPC (not EFBIG under
RLIMIT_FSIZE, as in test_spool.py and test_agent.py, which stops a file, not the disk).

A refused capture is counted and leaves nothing behind; every capture accepted before the disk filled is
still whole, survives a restart and reaches a real ingest API on loopback.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from edge.agent import Agent, AgentConfig
from edge.client import IngestClient
from edge.detectors.load import load_detector
from edge.frames import Frame
from edge.protocol import CaptureMeta, SourceRef, utc_now
from edge.spool import Spool
from edge.triggers import TriggerConfig
from edge.uploader import Uploader
from feedback.ingest.serving import BackgroundServer
from store.devices import add_device
from store.inbox import CAPTURES, CaptureRecord
from store.settings import Settings, Workspace
from tests.edge.planted_model import planted_onnx
from tests.edge.tmpfs import small_tmpfs

# Every frame a hard example of its own: no budget, no dedup, no flicker.
EVERY_FRAME = TriggerConfig(random_rate=1.0, budget_per_hour=1e9, budget_burst=10_000, dedup_memory=0,
                            flicker_enabled=False)


def noise(index: int) -> np.ndarray:
    """A 320x240 frame of noise: about 70 KB as a JPEG, so a dozen fill 1 MiB; no two alike."""
    return np.random.default_rng(index).integers(0, 256, (240, 320, 3), np.uint8)


def test_a_spool_on_a_full_disk_refuses_captures_cleanly_and_keeps_and_uploads_what_it_accepted(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    token = add_device(ws.catalog, ws.objects, "cam-full")
    model = load_detector(planted_onnx(tmp_path / "m.onnx", [(10, 10, 8, 8, 0, 0.9)]))
    with BackgroundServer(ws.settings) as url, small_tmpfs(tmp_path / "disk") as disk:
        root = disk / "spool"
        config = AgentConfig(server=url, token=token, device="cam-full", spool_dir=root, triggers=EVERY_FRAME)
        agent = Agent(config, model, [])
        accepted: dict[int, bytes] = {}  # frame index -> sha256 of the JPEG it was spooled with
        index = 0
        try:
            while agent.spool_write_errors < 3:  # the disk is full, and stays full for a few more frames
                assert index < 100, f"1 MiB never filled: {agent.status()}"
                spooled = agent.spooled
                agent.step(Frame(noise(index), index, index / 10, utc_now(), SourceRef(uri="t", frame_index=index)))
                if agent.spooled > spooled:
                    _, jpeg = cv2.imencode(".jpg", noise(index), [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
                    accepted[index] = hashlib.sha256(jpeg.tobytes()).digest()
                index += 1
            status = agent.status()
            # The loop went on through every refusal; each frame was either spooled or counted as refused.
            assert status["frames"] == index and status["spooled"] + status["spool_write_errors"] == index
            assert len(accepted) >= 3, status
            assert os.strerror(errno.ENOSPC) in (status["last_spool_error"] or ""), status["last_spool_error"]
            # Nothing of a refused capture is left: no temp file, no extra (or half) entry, nothing quarantined.
            assert list((root / "tmp").iterdir()) == []
            ready = list((root / "ready").iterdir())
            assert len(ready) == len(accepted) == agent.spool.depth()
            assert list((root / "corrupt").iterdir()) == []
            free = os.statvfs(disk)
            assert free.f_bavail * free.f_frsize < min(p.stat().st_size for p in ready)  # the disk is full
        finally:
            agent.close()
        # A restart (the disk still full) finds every accepted entry whole...
        with Spool(root) as spool:
            assert (spool.corrupt_entries, spool.tmp_removed, spool.depth()) == (0, 0, len(accepted))
            entries = spool.next_batch(1000)
            assert sorted(CaptureMeta.model_validate_json(e.meta_json).source.frame_index for e in entries) == sorted(
                accepted)
            assert all(hashlib.sha256(e.image).digest() == accepted[CaptureMeta.model_validate_json(
                e.meta_json).source.frame_index] for e in entries)
            # ...and uploads it: the API on loopback receives each one.
            uploader = Uploader(spool, lambda: IngestClient(url, token))
            uploader.start()
            try:
                assert uploader.flush(60), uploader.stats()
            finally:
                uploader.stop()
            assert spool.depth() == 0 and uploader.stats()["uploaded"] == len(accepted)
    records = [CaptureRecord.model_validate_json(ws.objects.get(key)) for key in ws.objects.list(CAPTURES)]
    assert sorted(r.meta.source.frame_index for r in records) == sorted(accepted)
    for record in records:
        image = ws.blobs.get(record.sha256)
        assert hashlib.sha256(image).digest() == accepted[record.meta.source.frame_index]
