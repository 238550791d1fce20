"""The API's rollout endpoints on a real uvicorn server: `GET /v1/deployment` (per device, ETag, 304) and
`GET /v1/artifacts/{sha256}` (only deployed blobs; ranges for resuming), and their OpenAPI description.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.protocol import DeploymentAnswer, ReferenceSet
from feedback.ingest.serving import BackgroundServer
from feedback.rollout.deployments import pin_device, rollback_rollout, start_rollout
from store.devices import add_device, revoke_device
from tests.feedback.rollout.artifacts import artifact, holdout_workspace, parity_of


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path) -> Iterator[dict]:
    ws = holdout_workspace(tmp_path_factory.mktemp("api"), ppe_dir, n=2, registry_ttl_s=0.0)
    parity = parity_of(ppe_pt, ppe_onnx, ppe_dir)
    a, b = (artifact(ws, ppe_onnx, name, parity, ppe_dir) for name in ("a", "b"))
    tokens = {d: add_device(ws.catalog, ws.objects, d) for d in ("gate-east", "gate-west", "gone")}
    revoke_device(ws.catalog, ws.objects, "gone")
    with BackgroundServer(ws.settings) as url:
        yield {"ws": ws, "url": url, "tokens": tokens, "a": a, "b": b}


def get(api: dict, path: str, device: str | None = "gate-east", **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {api['tokens'][device]}"} if device else {}
    return httpx.get(f"{api['url']}{path}", headers={**auth, **headers}, timeout=30)


def test_each_device_hears_its_own_answer_with_an_etag_and_304_until_it_changes(api: dict) -> None:
    ws, a = api["ws"], api["a"]
    first = get(api, "/v1/deployment")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    assert DeploymentAnswer.model_validate_json(first.content).reason == "none"
    etag = first.headers["etag"]
    assert get(api, "/v1/deployment", **{"If-None-Match": etag}).status_code == 304
    rollout = start_rollout(ws, a.model_version, 50)  # gate-east's bucket is in a 50% canary, gate-west's is not
    try:
        changed = get(api, "/v1/deployment", **{"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        answer = DeploymentAnswer.model_validate_json(changed.content)
        assert (answer.device, answer.reason, answer.rollout_id, answer.artifact) == \
            ("gate-east", "canary", rollout.id, a)
        west = get(api, "/v1/deployment", "gate-west", **{"If-None-Match": etag})
        assert west.status_code == 200  # its answer changed too: it names the rollout now
        assert DeploymentAnswer.model_validate_json(west.content).artifact is None
        again = get(api, "/v1/deployment", "gate-west", **{"If-None-Match": f'W/"x", {west.headers["etag"]}'})
        assert again.status_code == 304 and again.content == b""
    finally:
        rollback_rollout(ws)


def test_deployment_needs_a_live_device_token(api: dict) -> None:
    assert get(api, "/v1/deployment", device=None).json()["reason"] == "missing_token"
    assert get(api, "/v1/deployment", device="gone").status_code == 403


def test_artifacts_stream_whole_or_by_range(api: dict) -> None:
    ws, b = api["ws"], api["b"]
    pin_device(ws, "gate-west", b.model_version)  # deployed somewhere: downloadable by any device
    blob = ws.blobs.get(b.onnx_sha256)
    path = f"/v1/artifacts/{b.onnx_sha256}"
    whole = get(api, path)
    assert whole.status_code == 200 and whole.content == blob
    assert whole.headers["etag"] == f'"{b.onnx_sha256}"' and whole.headers["accept-ranges"] == "bytes"
    part = get(api, path, Range="bytes=1000-")
    assert part.status_code == 206 and part.content == blob[1000:]
    assert part.headers["content-range"] == f"bytes 1000-{len(blob) - 1}/{len(blob)}"
    assert get(api, path, Range="bytes=10-19").content == blob[10:20]
    assert get(api, path, Range="bytes=-5").content == blob[-5:]
    assert get(api, path, Range=f"bytes=5-{10 * len(blob)}").content == blob[5:]
    beyond = get(api, path, Range=f"bytes={len(blob)}-")
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(blob)}"
    # A range for another version of the file (If-Range) or several ranges: the whole blob, 200.
    assert get(api, path, Range="bytes=0-9", **{"If-Range": '"other"'}).status_code == 200
    assert get(api, path, Range="bytes=0-1,5-6").content == blob
    reference = get(api, f"/v1/artifacts/{b.reference_sha256}")
    assert ReferenceSet.model_validate_json(reference.content).frames


def test_only_deployed_blobs_can_be_fetched(api: dict) -> None:
    ws, a = api["ws"], api["a"]
    capture = ws.blobs.put(b"\xff\xd8 a frame another device uploaded")
    assert get(api, f"/v1/artifacts/{capture}").json()["reason"] == "no_such_artifact"
    assert get(api, f"/v1/artifacts/{a.onnx_sha256}").status_code == 404  # published, deployed nowhere
    assert get(api, "/v1/artifacts/not-a-sha").status_code == 404
    assert get(api, f"/v1/artifacts/{a.onnx_sha256}", device=None).status_code == 401


def test_openapi_documents_both(api: dict) -> None:
    schema = httpx.get(f"{api['url']}/openapi.json").json()
    deployment = schema["paths"]["/v1/deployment"]["get"]
    assert deployment["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("DeploymentAnswer")
    assert "304" in deployment["responses"]
    artifacts = schema["paths"]["/v1/artifacts/{sha256}"]["get"]
    assert {"200", "206", "404", "416"} <= set(artifacts["responses"])
    assert {"DeploymentAnswer", "ArtifactManifest", "ReferenceSet"} <= set(schema["components"]["schemas"])
