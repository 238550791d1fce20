"""The ingest API (`edgeloop serve`, in its own process) on a store that really fills up: the workspace's
blob store and inbox on a 1 MiB tmpfs answering ENOSPC.

What was accepted before the disk filled stays whole in the inbox; an upload the disk cannot hold leaves
nothing behind and is answered with a clear server error that a device retries, not a crash.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from edge.protocol import CaptureMeta, SourceRef, utc_now
from store.devices import add_device
from store.inbox import CAPTURES, CaptureRecord
from store.objects import TMP_PREFIX
from store.settings import Settings, Workspace
from tests.edge.tmpfs import small_tmpfs
from tests.integration.ingest_process import ServeProcess

pytestmark = pytest.mark.integration

DEVICE = "cam-full"


def jpeg(index: int) -> bytes:
    """A 320x240 JPEG of noise, about 70 KB: a dozen fill 1 MiB; no two alike."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(index).integers(0, 256, (240, 320, 3), np.uint8)).save(buf, "JPEG",
                                                                                                  quality=90)
    return buf.getvalue()


def meta(index: int) -> bytes:
    return CaptureMeta(device=DEVICE, camera="dock-1", captured_at=utc_now(), frame_width=320, frame_height=240,
                       model_version="m1", triggers=["random"], source=SourceRef(uri="cam", frame_index=index),
                       ).model_dump_json().encode()


@pytest.fixture
def full_disk_server(tmp_path: Path) -> Iterator[dict]:
    """`edgeloop serve` whose workspace (blobs, inbox, registry) is a 1 MiB tmpfs; the catalog lies elsewhere,
    as the API never opens it. Its log (stderr and stdout) goes to `log`."""
    catalog = tmp_path / "catalog.duckdb"
    with small_tmpfs(tmp_path / "ws") as root:
        ws = Workspace(Settings(workspace=root, catalog_path=catalog))
        token = add_device(ws.catalog, ws.objects, DEVICE)
        log = tmp_path / "serve.log"
        env = {"EDGELOOP_CATALOG_PATH": str(catalog), "EDGELOOP_REGISTRY_TTL_S": "0.5"}
        with ServeProcess(root, log, env) as api:
            yield {"url": api.url, "token": token, "ws": ws, "root": root, "log": log}


def upload(server: dict, index: int) -> httpx.Response:
    files = {"meta": ("meta.json", meta(index), "application/json"), "image": ("x", jpeg(index), "image/jpeg")}
    return httpx.post(f"{server['url']}/v1/captures", files=files,
                      headers={"Authorization": f"Bearer {server['token']}"}, timeout=30)


def fill(server: dict) -> tuple[dict[int, str], dict[int, httpx.Response]]:
    """Upload distinct captures until the disk refuses three: (frame index -> sha256 of each one accepted,
    frame index -> answer of each one refused)."""
    accepted: dict[int, str] = {}
    refused: dict[int, httpx.Response] = {}
    for index in range(100):
        response = upload(server, index)
        if response.status_code == 201:
            accepted[index] = response.json()["sha256"]
        else:
            refused[index] = response
            if len(refused) == 3:
                return accepted, refused
    pytest.fail(f"1 MiB never filled: {len(accepted)} accepted")


def test_uploads_accepted_before_the_disk_filled_stay_whole_and_a_refused_one_leaves_nothing(full_disk_server) -> None:
    server, ws, root = full_disk_server, full_disk_server["ws"], full_disk_server["root"]
    filler = root / "filler"
    filler.write_bytes(os.urandom(300_000))  # room to give back once the disk has filled
    accepted, refused = fill(server)
    assert len(accepted) >= 3 and all(r.status_code >= 500 for r in refused.values()), {
        i: (r.status_code, r.text[:200]) for i, r in refused.items()}
    free = os.statvfs(root)
    assert free.f_bavail * free.f_frsize < len(jpeg(0))  # the disk really is full
    # Every capture accepted before sits whole in the inbox: its record, and its image under its sha256.
    records = {r.meta.source.frame_index: r for r in
               (CaptureRecord.model_validate_json(ws.objects.get(key)) for key in ws.objects.list(CAPTURES))}
    assert sorted(records) == sorted(accepted)
    for index, sha in accepted.items():
        assert records[index].sha256 == sha == hashlib.sha256(jpeg(index)).hexdigest()
        assert ws.blobs.get(sha) == jpeg(index)
    # A refused one left nothing: no record, no blob, no temp file anywhere in the store.
    for index in refused:
        assert not ws.objects.exists(ws.blobs.key(hashlib.sha256(jpeg(index)).hexdigest()))
    assert [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)] == []
    # So once there is room again, the device's retry of each refused upload is stored anew (201, not a
    # "duplicate" of something half written), and the server never went down meanwhile.
    filler.unlink()
    for index in refused:
        again = upload(server, index)
        assert again.status_code == 201 and again.json()["duplicate"] is False, again.text
        assert ws.blobs.get(again.json()["sha256"]) == jpeg(index)
    assert len(ws.objects.list(CAPTURES)) == len(accepted) + len(refused)


def test_a_full_disk_is_answered_with_a_clear_507_and_no_traceback(full_disk_server) -> None:
    server = full_disk_server
    _, refused = fill(server)
    for response in refused.values():
        assert response.status_code == 507, (response.status_code, response.text[:300])
        body = response.json()  # the API's problem form, as for every other refusal
        assert body["reason"] == "insufficient_storage" and body["detail"], body
    log = server["log"].read_text()
    assert "Traceback" not in log, log[-3000:]
    assert httpx.get(f"{server['url']}/healthz").status_code == 200
