"""The ingest API as devices meet it: `edgeloop serve` in its own process, real HTTP on loopback.

Every refusal is checked for its status and reason, and for leaving the store untouched.
"""

from __future__ import annotations

import io
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from edge.protocol import CaptureMeta, SourceRef, utc_now
from store.devices import add_device, revoke_device
from store.settings import Settings, Workspace
from tests.integration.ingest_process import ServeProcess

pytestmark = pytest.mark.integration

LIMIT = 2 * 1024 * 1024  # a small body limit keeps the 413 tests quick


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("ws")
    ws = Workspace(Settings(workspace=root))
    tokens = {name: add_device(ws.catalog, ws.objects, name) for name in ("cam-a", "cam-b", "cam-gone")}
    env = {"EDGELOOP_MAX_UPLOAD_BYTES": str(LIMIT), "EDGELOOP_REGISTRY_TTL_S": "0.5"}
    with ServeProcess(root, tmp_path_factory.mktemp("serve") / "serve.log", env) as api:
        yield {"url": api.url, "ws": ws, "root": root, "tokens": tokens}


def jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def meta(device: str = "cam-a", width: int = 64, height: int = 48, **changes: object) -> dict:
    body = CaptureMeta(
        device="cam-a", camera="dock-1", captured_at=utc_now(), frame_width=width, frame_height=height,
        model_version="m1", triggers=["uncertainty"], source=SourceRef(uri="f.jpg", frame_index=3),
        detections=[{"xyxy": (1, 2, 30, 40), "confidence": 0.4, "class_id": 1, "class_name": "no_helmet"}],
    ).model_dump(mode="json")
    body.update(device=device, **changes)  # after validation: tests send invalid values too
    return body


def post(server: dict, meta_obj: object, image: bytes, *, token: str | None = "cam-a",
         media_type: str = "image/jpeg") -> httpx.Response:
    headers = {"Authorization": f"Bearer {server['tokens'].get(token, token)}"} if token else {}
    meta_bytes = meta_obj if isinstance(meta_obj, bytes) else json.dumps(meta_obj).encode()
    files = {"meta": ("meta.json", meta_bytes, "application/json"), "image": ("x", image, media_type)}
    return httpx.post(f"{server['url']}/v1/captures", files=files, headers=headers, timeout=30)


def snapshot(root: Path) -> dict[str, int]:
    """Every file the API could have written (the catalog and registry are not the API's)."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] not in ("registry",) and "catalog.duckdb" not in p.name
    }


def test_valid_upload_is_stored_and_a_duplicate_gets_the_same_id(server: dict) -> None:
    image = jpeg(seed=1)
    first = post(server, meta(), image)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["duplicate"] is False and len(body["sha256"]) == 64 and body["id"] == body["sha256"]
    assert server["ws"].blobs.get(body["sha256"]) == image
    assert server["ws"].inbox.has_capture(body["id"])
    before = snapshot(server["root"])
    again = post(server, meta(), image)
    assert again.status_code == 200 and again.json() == {**body, "duplicate": True}
    assert snapshot(server["root"]) == before


def test_png_is_accepted(server: dict) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "PNG")
    response = post(server, meta(), buf.getvalue(), media_type="image/png")
    assert response.status_code == 201, response.text


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header for a huge 1-bit image whose data is tiny when compressed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    raw = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


BAD_UPLOADS = {
    # name: (how to build the request, status, reason)
    "no token": (lambda s: post(s, meta(), jpeg(seed=9), token=None), 401, "missing_token"),
    "unknown token": (lambda s: post(s, meta(), jpeg(seed=9), token="x" * 43), 401, "unknown_token"),
    "not bearer": (lambda s: httpx.post(f"{s['url']}/v1/captures", headers={"Authorization": "Basic abc"}), 401,
                   "malformed_authorization"),
    "device mismatch": (lambda s: post(s, meta(device="cam-b"), jpeg(seed=9)), 403, "device_mismatch"),
    "not multipart": (lambda s: httpx.post(f"{s['url']}/v1/captures", content=b"hello",
                                           headers={"Authorization": f"Bearer {s['tokens']['cam-a']}",
                                                    "Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    "gif image": (lambda s: post(s, meta(), b"GIF89a....", media_type="image/gif"), 415, "unsupported_media_type"),
    "random bytes as jpeg": (lambda s: post(s, meta(), os.urandom(5000)), 422, "undecodable_image"),
    "truncated jpeg": (lambda s: post(s, meta(), jpeg(seed=9)[:-400]), 422, "undecodable_image"),
    "png labelled jpeg": (lambda s: post(s, meta(), _bomb_png(64, 48)), 422, "undecodable_image"),
    "decompression bomb": (lambda s: post(s, meta(width=30000, height=30000), _bomb_png(30000, 30000),
                                          media_type="image/png"), 422, "too_many_pixels"),
    "frame size mismatch": (lambda s: post(s, meta(width=65, height=48), jpeg(seed=9)), 422, "frame_size_mismatch"),
    "meta not json": (lambda s: post(s, b"{not json", jpeg(seed=9)), 422, "invalid_meta"),
    "meta missing field": (lambda s: post(s, {k: v for k, v in meta().items() if k != "camera"}, jpeg(seed=9)), 422,
                           "invalid_meta"),
    "meta unknown field": (lambda s: post(s, meta(extra_field=1), jpeg(seed=9)), 422, "invalid_meta"),
    "box outside frame": (lambda s: post(s, meta(detections=[{"xyxy": [10, 10, 90, 40], "confidence": 0.5,
                                                              "class_id": 0}]), jpeg(seed=9)), 422, "invalid_meta"),
    "camera escapes path": (lambda s: post(s, meta(camera="../../etc"), jpeg(seed=9)), 422, "invalid_meta"),
    "device escapes path": (lambda s: post(s, meta(device="../cam-a"), jpeg(seed=9)), 422, "invalid_meta"),
    "extra part": (lambda s: httpx.post(f"{s['url']}/v1/captures", headers={"Authorization": f"Bearer {s['tokens']['cam-a']}"},
                                        files={"meta": ("m", json.dumps(meta()).encode(), "application/json"),
                                               "image": ("i", jpeg(seed=9), "image/jpeg"),
                                               "other": ("o", b"x", "text/plain")}), 422, "bad_parts"),
    "body over limit (declared)": (lambda s: post(s, meta(), os.urandom(LIMIT + 1)), 413, "body_too_large"),
    "body cut short": (lambda s: _raw(s, lambda body: body[:-40]), 422, "bad_parts"),
    "meta sent twice": (lambda s: _raw(s, lambda body: body.replace(b'name="image"', b'name="meta"')), 422, "bad_parts"),
}


def _raw(server: dict, damage: Callable[[bytes], bytes]) -> httpx.Response:
    """A valid upload, encoded by httpx, then damaged on its way out."""
    files = {"meta": ("m", json.dumps(meta()).encode(), "application/json"), "image": ("i", jpeg(seed=9), "image/jpeg")}
    request = httpx.Request("POST", f"{server['url']}/v1/captures", files=files,
                            headers={"Authorization": f"Bearer {server['tokens']['cam-a']}"})
    return httpx.post(str(request.url), content=damage(request.read()),
                      headers={k: v for k, v in request.headers.items() if k.lower() != "content-length"})


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_precisely_and_writes_nothing(server: dict, case: str) -> None:
    build, status, reason = BAD_UPLOADS[case]
    before = snapshot(server["root"])
    response = build(server)
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason
    assert snapshot(server["root"]) == before


def test_body_over_limit_is_stopped_while_streaming(server: dict) -> None:
    """No Content-Length (chunked): the server must cut the stream at the limit, not after."""
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        boundary = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\nContent-Type: image/jpeg\r\n\r\n"
        yield boundary
        for _ in range(64):  # up to 64 MB, far past the 2 MB limit
            sent += 1
            yield b"\xff" * (1024 * 1024)

    before = snapshot(server["root"])
    try:
        response = httpx.post(
            f"{server['url']}/v1/captures", content=body(), timeout=30,
            headers={"Authorization": f"Bearer {server['tokens']['cam-a']}", "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 413 and response.json()["reason"] == "body_too_large"
    except httpx.HTTPError:
        pass  # the server may close the connection on us mid-stream; what matters is below
    assert sent < 64, "the server read the whole oversized body"
    assert snapshot(server["root"]) == before


def test_revoked_token_is_refused_within_seconds(server: dict) -> None:
    assert post(server, meta(device="cam-gone"), jpeg(seed=20), token="cam-gone").status_code == 201
    revoke_device(server["ws"].catalog, server["ws"].objects, "cam-gone")
    # The API re-reads the registry every 0.5 s (EDGELOOP_REGISTRY_TTL_S): wait for the refusal, with a
    # deadline far beyond that for a busy machine; tests/store/test_devices.py pins the ttl itself.
    deadline = time.monotonic() + 30
    while (response := post(server, meta(device="cam-gone"), jpeg(seed=21), token="cam-gone")).status_code != 403:
        assert time.monotonic() < deadline, f"still answering {response.status_code} 30 s after revoking"
        time.sleep(0.2)
    assert response.json()["reason"] == "revoked_token"
    assert not server["ws"].inbox.has_capture(response.json().get("id", "none"))


def _heartbeat(device: str = "cam-a", **changes: object) -> dict:
    body = {"device": device, "sent_at": utc_now().isoformat(), "model_version": "m1", "fps": 14.5,
            "inference_ms_p50": 20.0, "inference_ms_p99": 41.0, "queue_depth": 3}
    return {**body, **changes}


def test_heartbeat_is_stored_and_checked(server: dict) -> None:
    url, auth = f"{server['url']}/v1/heartbeat", {"Authorization": f"Bearer {server['tokens']['cam-a']}"}
    ok = httpx.post(url, json=_heartbeat(), headers=auth)
    assert ok.status_code == 201, ok.text
    assert server["ws"].objects.exists(f"inbox/heartbeats/{ok.json()['id']}.json")
    before = snapshot(server["root"])
    assert httpx.post(url, json=_heartbeat("cam-b"), headers=auth).status_code == 403
    assert httpx.post(url, json=_heartbeat(fps=-1), headers=auth).json()["reason"] == "invalid_heartbeat"
    assert httpx.post(url, json=_heartbeat()).status_code == 401
    assert httpx.post(url, content=b"fps=1", headers={**auth, "Content-Type": "text/plain"}).status_code == 415
    assert snapshot(server["root"]) == before


def metric_samples(server: dict) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample /metrics shows now, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server['url']}/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_count_requests_bytes_rejections_and_latency(server: dict) -> None:
    # Compared with the counters before this test's own requests, so that other tests do not matter.
    before = metric_samples(server)
    image = jpeg(seed=90)
    assert post(server, meta(), image, token=None).status_code == 401
    assert post(server, meta(), image).status_code == 201
    after = metric_samples(server)

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    uploads = {"path": "/v1/captures"}
    assert grew("edgeloop_ingest_rejections_total", reason="missing_token") == 1
    assert grew("edgeloop_ingest_requests_total", method="POST", status="401", **uploads) == 1
    assert grew("edgeloop_ingest_requests_total", method="POST", status="201", **uploads) == 1
    assert grew("edgeloop_ingest_captures_total", outcome="new") == 1
    assert grew("edgeloop_ingest_request_seconds_count", **uploads) == 2
    assert grew("edgeloop_ingest_request_seconds_bucket", le="+Inf", **uploads) == 2
    assert grew("edgeloop_ingest_request_seconds_sum", **uploads) > 0
    assert grew("edgeloop_ingest_request_bytes_total", **uploads) > len(image)  # the refused body may go unread


def test_openapi_documents_the_contract(server: dict) -> None:
    spec = httpx.get(f"{server['url']}/openapi.json").json()
    upload = spec["paths"]["/v1/captures"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["required"]) == {"meta", "image"}
    assert {"200", "201", "401", "403", "413", "415", "422"} <= set(upload["responses"])
    assert "detections" in spec["components"]["schemas"]["CaptureMeta"]["properties"]
    assert "/v1/heartbeat" in spec["paths"] and "/healthz" in spec["paths"] and "/metrics" in spec["paths"]


def test_blobs_are_served_only_at_signed_unexpired_urls(server: dict) -> None:
    from store.signing import signed_blob_url, signing_key

    image = jpeg(seed=77)
    sha = post(server, meta(), image).json()["sha256"]
    key = signing_key(server["ws"].objects)
    good = httpx.get(signed_blob_url(server["url"], sha, key, ttl_s=60))
    assert good.status_code == 200 and good.content == image and good.headers["content-type"] == "image/jpeg"
    assert httpx.get(f"{server['url']}/v1/blobs/{sha}").json()["reason"] == "unsigned_url"
    expired = signed_blob_url(server["url"], sha, key, ttl_s=60, now=time.time() - 3600)
    assert httpx.get(expired).json()["reason"] == "expired"
    forged = signed_blob_url(server["url"], sha, b"k" * 32, ttl_s=60)
    assert httpx.get(forged).json()["reason"] == "bad_signature"
    other = signed_blob_url(server["url"], "0" * 64, key, ttl_s=60)
    assert httpx.get(other).status_code == 404
