"""The uploader against the real ingest API (`edgeloop serve` in its own process, loopback HTTP).

Refused tokens keep the captures in the spool until a good token arrives; the API's own refusals are set aside.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.client import IngestClient, UploadRejected
from edge.protocol import CaptureMeta, Heartbeat, SourceRef, utc_now
from edge.spool import Spool
from edge.uploader import Uploader
from store.devices import add_device, revoke_device, rotate_token
from store.settings import Settings, Workspace
from tests.edge.uploaders import Uploaders, spool_fixture  # noqa: F401 (the `spool` fixture)
from tests.integration.ingest_process import ServeProcess
from tests.polling import holds_within

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 64, 48
REGISTRY_TTL_S = 0.2  # how soon the API sees a registry change; the tests wait for it, never sleep it


class Api(ServeProcess):
    """A running `edgeloop serve` and the workspace it serves."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "ws", root / "serve.log", {"EDGELOOP_REGISTRY_TTL_S": str(REGISTRY_TTL_S)})
        self.root = root
        self.ws = Workspace(Settings(workspace=root / "ws"))

    def rejections(self, reason: str) -> float:
        """How many requests the API refused for `reason`, from its Prometheus metrics."""
        return self.metric(f'edgeloop_ingest_rejections_total{{reason="{reason}"}}')


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with Api(tmp_path_factory.mktemp("uploader_auth")) as server:
        yield server


@pytest.fixture
def make_uploader(spool: Spool, api: Api) -> Iterator[Callable[..., Uploader]]:
    uploaders = Uploaders(spool, api.url, timeout_s=10)
    yield uploaders.start
    for uploader in uploaders.started:
        assert uploader.stop(timeout=10)


def _wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    return holds_within(condition, timeout)


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def _meta(device: str, i: int, **changes: object) -> bytes:
    meta = CaptureMeta(
        device=device, camera="dock-1", captured_at=utc_now(), frame_width=WIDTH, frame_height=HEIGHT,
        model_version="m1", triggers=["uncertainty"], source=SourceRef(uri="rtsp://cam/1", frame_index=i),
    ).model_dump(mode="json")
    return json.dumps({**meta, **changes}).encode()  # after validation: a test sends a bad one too


def _put(spool: Spool, device: str, seed: int, **changes: object) -> str:
    """Spool one real capture of `device`; returns its id on the server (the image's sha256)."""
    image = _jpeg(seed)
    spool.put(_meta(device, seed, **changes), image, "image/jpeg")
    return hashlib.sha256(image).hexdigest()


def _refusal(api: Api, token: str) -> str | None:
    """The reason the API now gives for `token`, or None when it accepts it."""
    try:
        with IngestClient(api.url, token) as client:
            client.whoami()
    except UploadRejected as exc:
        return exc.reason
    return None


def _register(api: Api, device: str) -> str:
    """A new device's token, once the API has read the registry that holds it."""
    token = add_device(api.ws.catalog, api.ws.objects, device)
    assert _wait_until(lambda: _refusal(api, token) is None)
    return token


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_unknown_token_keeps_the_captures_until_the_right_token_arrives(
    api: Api, spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    good = _register(api, "cam-unknown")
    token = ["a-token-from-another-workspace"]
    refused_before = api.rejections("unknown_token")
    uploader = make_uploader(token)
    shas = [_put(spool, "cam-unknown", seed) for seed in range(3)]

    # Retried (the API saw it more than once), and never given up on.
    assert _wait_until(lambda: uploader.retries >= 2 and api.rejections("unknown_token") >= refused_before + 2)
    assert spool.depth() == 3 and uploader.rejected == 0 and uploader.uploaded == 0
    assert "401 unknown_token" in (uploader.last_error or "")
    assert _files(spool.root / "rejected") == []
    assert not any(api.ws.inbox.has_capture(sha) for sha in shas)

    token[0] = good  # the device's config is fixed; the next client the uploader makes uses it
    assert uploader.flush(20)
    assert all(api.ws.inbox.has_capture(sha) for sha in shas)
    assert all(api.ws.blobs.get(sha) for sha in shas)
    assert (uploader.uploaded, uploader.duplicates, uploader.rejected) == (3, 0, 0)
    assert _files(spool.root / "ready") == [] and _files(spool.root / "rejected") == []


def test_a_revoked_token_keeps_the_captures_and_keeps_trying(
    api: Api, spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    token = [_register(api, "cam-revoked")]
    uploader = make_uploader(token)
    delivered = _put(spool, "cam-revoked", 10)
    assert uploader.flush(20) and api.ws.inbox.has_capture(delivered)  # the token did work

    revoke_device(api.ws.catalog, api.ws.objects, "cam-revoked")
    assert _wait_until(lambda: _refusal(api, token[0]) == "revoked_token")  # the API has read the registry
    refused_before = api.rejections("revoked_token")
    kept = [_put(spool, "cam-revoked", seed) for seed in (11, 12)]

    assert _wait_until(lambda: uploader.retries >= 2 and api.rejections("revoked_token") >= refused_before + 2)
    assert spool.depth() == 2 and uploader.rejected == 0 and uploader.uploaded == 1
    assert "403 revoked_token" in (uploader.last_error or "")
    assert _files(spool.root / "rejected") == []
    assert not any(api.ws.inbox.has_capture(sha) for sha in kept)

    # The operator issues the device a new token; the kept captures go out with it, the old token stays out.
    old = token[0]
    token[0] = rotate_token(api.ws.catalog, api.ws.objects, "cam-revoked")
    assert _wait_until(lambda: _refusal(api, token[0]) is None)
    assert uploader.flush(30) and all(api.ws.inbox.has_capture(sha) for sha in kept)
    assert spool.depth() == 0 and uploader.rejected == 0 and uploader.uploaded == 3
    assert _refusal(api, old) == "unknown_token"


def test_another_devices_token_keeps_the_captures_until_the_config_is_fixed(
    api: Api, spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """A swapped config file (cam-b's token on cam-a) is a setup mistake: nothing is thrown away."""
    mine, theirs = _register(api, "cam-a"), _register(api, "cam-b")
    token = [theirs]
    refused_before = api.rejections("device_mismatch")
    uploader = make_uploader(token)
    kept = [_put(spool, "cam-a", seed) for seed in (31, 32)]
    assert _wait_until(lambda: uploader.retries >= 2 and api.rejections("device_mismatch") >= refused_before + 2)
    assert spool.depth() == 2 and uploader.rejected == 0 and "403 device_mismatch" in (uploader.last_error or "")
    token[0] = mine
    assert uploader.flush(30) and all(api.ws.inbox.has_capture(sha) for sha in kept)
    assert _files(spool.root / "rejected") == []


def test_heartbeats_resume_with_a_new_token(api: Api, spool: Spool, make_uploader: Callable[..., Uploader]) -> None:
    good = _register(api, "cam-heartbeat")
    token = ["not-registered"]

    def heartbeat() -> Heartbeat:
        return Heartbeat(
            device="cam-heartbeat", sent_at=utc_now(), model_version="m1", fps=25.0,
            inference_ms_p50=12.0, inference_ms_p99=30.0, queue_depth=spool.depth(),
        )

    # An empty spool: only heartbeats go out, so no failed upload renews the client for them.
    uploader = make_uploader(token, heartbeat=heartbeat, heartbeat_interval_s=0.05)
    assert _wait_until(lambda: uploader.heartbeat_failures >= 2)
    assert uploader.heartbeats_sent == 0 and "401 unknown_token" in (uploader.last_error or "")

    token[0] = good
    assert _wait_until(lambda: uploader.heartbeats_sent >= 2)
    assert api.ws.inbox.backlog()["heartbeats"] >= 2


def test_a_capture_the_api_refuses_is_set_aside_with_the_api_reason(
    api: Api, spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    token = [_register(api, "cam-refused")]
    uploader = make_uploader(token)
    wrong_size = _put(spool, "cam-refused", 20, frame_width=WIDTH * 2)  # the meta lies about the frame
    unsafe = _put(spool, "cam-refused", 21, camera="../etc")
    good = _put(spool, "cam-refused", 22)
    assert uploader.flush(20)

    assert api.ws.inbox.has_capture(good)
    assert not api.ws.inbox.has_capture(wrong_size) and not api.ws.inbox.has_capture(unsafe)
    assert (uploader.uploaded, uploader.rejected, uploader.retries) == (1, 2, 0), uploader.last_error
    notes = [json.loads(p.read_text()) for p in (spool.root / "rejected").glob("*.reason.json")]
    assert sorted((note["status"], note["reason"]) for note in notes) == [(422, "frame_size_mismatch"), (422, "invalid_meta")]
    assert len(list((spool.root / "rejected").glob("*.entry"))) == 2
