"""The cloud generators' client and guards against a loopback Vertex AI: settings, credentials, retries, cost, cache.

Every call goes through the real google-genai client to tests/feedback/synthesis/vertex_stub.py; nothing leaves the
machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.genai import types

from feedback.synthesis.cloud.client import CloudCalls, CloudError, image_seed, make_client
from feedback.synthesis.cloud.gemini_edit import GeminiEditGenerator
from feedback.synthesis.generators import cloud_generator
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from store.settings import Settings, Workspace
from tests.feedback.synthesis.vertex_stub import VertexStub, noise_frame

MODEL = "gemini-2.5-flash-image"


@pytest.fixture
def stub() -> Iterator[VertexStub]:
    with VertexStub() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ambient_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither this machine's environment nor a stray edgeloop.toml may decide where calls go."""
    monkeypatch.chdir(tmp_path)
    for name in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_API_KEY", "GEMINI_API_KEY",
                 "EDGELOOP_GCP_PROJECT", "EDGELOOP_GCP_LOCATION", "EDGELOOP_GENAI_TOKEN",
                 "EDGELOOP_GENAI_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # Points ADC at a file that is not there, so google.auth never probes a metadata server.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-adc.json"))


def settings(stub: VertexStub, tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {"workspace": tmp_path / "ws", "gcp_project": "proj", "gcp_location": "europe-west4",
                                 "genai_token": "tok", "genai_base_url": stub.url}  # fmt: skip
    return Settings(**(values | extra))


def frame() -> LabelledFrame:
    boxes = np.array([[300, 200, 340, 250], [60, 60, 100, 110], [500, 300, 540, 350]], float)
    return LabelledFrame(image_sha256="f" * 64, image=noise_frame(), boxes=boxes, class_ids=np.array([0, 0, 0]))


def edit(count: int, **extra: object) -> SynthesisRequest:
    return SynthesisRequest(target_class=1, count=count, confusable_classes=(0,),
                            edit_instruction="Remove the hard hat; show the worker's bare head.", **extra)  # type: ignore[arg-type]  # fmt: skip


def run(calls: CloudCalls, request: SynthesisRequest) -> list[SyntheticImage | Rejected]:
    return list(GeminiEditGenerator(calls, MODEL).generate(request, [frame()]))


def generate_once(client) -> None:  # type: ignore[no-untyped-def]
    client.models.generate_content(model=MODEL, contents=["a hard hat"],
                                   config=types.GenerateContentConfig(response_modalities=["IMAGE"]))  # fmt: skip


def test_settings_choose_project_location_token_and_endpoint(stub: VertexStub, tmp_path: Path) -> None:
    generate_once(make_client(settings(stub, tmp_path)))
    seen = stub.seen[-1]
    assert (seen.project, seen.location, seen.model, seen.method) == ("proj", "europe-west4", MODEL, "generateContent")
    assert seen.headers["Authorization"] == "Bearer tok"


def test_environment_names_the_issue_gives(stub: VertexStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_GCP_PROJECT", "from-edgeloop")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-google")  # EDGELOOP_ wins
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "asia-northeast1")  # the fallback when EDGELOOP_ has none
    monkeypatch.setenv("EDGELOOP_GENAI_TOKEN", "env-token")
    monkeypatch.setenv("EDGELOOP_GENAI_BASE_URL", stub.url)
    generate_once(make_client(Settings()))
    seen = stub.seen[-1]
    assert (seen.project, seen.location) == ("from-edgeloop", "asia-northeast1")
    assert seen.headers["Authorization"] == "Bearer env-token"


def test_application_default_credentials_without_a_token(
    stub: VertexStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADC as workload identity federation whose token exchange is the stub: google.auth's real flow, on loopback.
    (tmp_path / "subject.jwt").write_text("subject-token")
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": f"{stub.url}/token",
        "credential_source": {"file": str(tmp_path / "subject.jwt")},
    }))  # fmt: skip
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj")  # else google.auth asks Resource Manager which project it is
    generate_once(make_client(settings(stub, tmp_path, genai_token=None)))
    assert stub.seen[-1].headers["Authorization"] == "Bearer adc-token"
    assert "subject_token=subject-token" in stub.token_requests[0]


def test_missing_credentials_or_project_say_what_to_set(stub: VertexStub, tmp_path: Path) -> None:
    with pytest.raises(CloudError, match="EDGELOOP_GENAI_TOKEN"):
        make_client(settings(stub, tmp_path, genai_token=None))
    with pytest.raises(CloudError, match="EDGELOOP_GCP_PROJECT or GOOGLE_CLOUD_PROJECT"):
        make_client(settings(stub, tmp_path, gcp_project=None))
    assert stub.seen == []


def test_429_is_retried_with_backoff(stub: VertexStub, tmp_path: Path) -> None:
    busy = {
        "error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}
    }
    stub.reply(429, busy)
    stub.reply(429, busy)
    sleeps: list[float] = []
    results = run(CloudCalls.from_settings(settings(stub, tmp_path), sleep=sleeps.append), edit(1))
    assert [type(r) for r in results] == [SyntheticImage]
    assert len(stub.seen) == 3 and sleeps == [1.0, 2.0]
    assert stub.seen[0].body == stub.seen[2].body  # the same request, sent again


def test_retries_are_bounded_and_a_client_error_is_not_retried(stub: VertexStub, tmp_path: Path) -> None:
    for _ in range(3):
        stub.reply(
            503, {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}
        )
    sleeps: list[float] = []
    calls = CloudCalls.from_settings(settings(stub, tmp_path, genai_max_attempts=3), sleep=sleeps.append)
    with pytest.raises(CloudError, match="after 3 attempts: 503 UNAVAILABLE"):
        run(calls, edit(1))
    assert len(stub.seen) == 3 and sleeps == [1.0, 2.0]

    stub.reply(400, {"error": {"code": 400, "message": "Image too small.", "status": "INVALID_ARGUMENT"}})
    with pytest.raises(CloudError, match="400 INVALID_ARGUMENT: Image too small"):
        run(calls, edit(1, seed=9))
    assert len(stub.seen) == 4 and sleeps == [1.0, 2.0]


def test_cost_cap_stops_before_overspending(stub: VertexStub, tmp_path: Path) -> None:
    calls = CloudCalls.from_settings(settings(stub, tmp_path, genai_image_cost_usd={MODEL: 0.04}))
    results = run(calls, edit(5, max_cost_usd=0.1))
    kept = [r for r in results if isinstance(r, SyntheticImage)]
    assert len(kept) == 2 and len(stub.seen) == 2  # a third image would have made it 0.12
    assert [r.lineage["cost_usd"] for r in kept] == [0.04, 0.04]
    assert isinstance(results[-1], Rejected) and results[-1].reason.startswith("max_cost_usd 0.100 reached")
    assert len(results) == 3


def test_a_model_without_a_cost_estimate_cannot_be_capped(stub: VertexStub, tmp_path: Path) -> None:
    calls = CloudCalls.from_settings(settings(stub, tmp_path, genai_image_cost_usd={}))
    with pytest.raises(CloudError, match="no cost estimate for model 'gemini-2.5-flash-image'"):
        run(calls, edit(1, max_cost_usd=1.0))
    assert stub.seen == []
    assert len(run(calls, edit(1))) == 1  # uncapped, the call goes ahead


def test_a_rerun_is_answered_from_the_cache_and_pays_nothing(stub: VertexStub, tmp_path: Path) -> None:
    s = settings(stub, tmp_path, genai_image_cost_usd={MODEL: 0.04})
    first = run(CloudCalls.from_settings(s), edit(3, seed=4))
    assert len(stub.seen) == 3
    again = run(CloudCalls.from_settings(s), edit(3, seed=4))  # a new process would build its calls afresh too
    assert len(stub.seen) == 3  # the server saw no second request
    assert all(isinstance(r, SyntheticImage) for r in first + again)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image)  # type: ignore[union-attr]
        assert (a.lineage["cached"], b.lineage["cached"], b.lineage["cost_usd"]) == (False, True, 0.0)
    assert len(list((s.workspace / "cache" / "genai").rglob("*.json"))) == 3

    # Cached images cost nothing against the cap: 2 from disk and 1 new fit in 0.05.
    more = run(CloudCalls.from_settings(s), edit(4, seed=4, max_cost_usd=0.05))
    assert [r.lineage["cached"] for r in more[:4]] == [True, True, True, False]
    assert len(stub.seen) == 4

    # Another seed is another request.
    run(CloudCalls.from_settings(s), edit(1, seed=5))
    assert len(stub.seen) == 5 and stub.seen[-1].body["generationConfig"]["seed"] == image_seed(5, 0)


def test_the_registry_factories_build_from_the_workspace(stub: VertexStub, tmp_path: Path, ppe_pt: Path) -> None:
    from feedback.synthesis.cloud.gemini import GeminiImageGenerator
    from feedback.synthesis.cloud.imagen import ImagenGenerator
    from store.models import register_model

    ws = Workspace(settings(stub, tmp_path, gemini_image_model="gemini-3-pro-image-preview", fsync=False,
                            imagen_model="imagen-4.0-fast-generate-001"))  # fmt: skip
    edit_gen = cloud_generator("gemini-edit", ws)
    assert isinstance(edit_gen, GeminiEditGenerator)
    [r] = edit_gen.generate(edit(1), [frame()])
    assert isinstance(r, SyntheticImage) and stub.seen[-1].model == "gemini-3-pro-image-preview"
    assert len(list((tmp_path / "ws" / "cache" / "genai").rglob("*.json"))) == 1  # the cache lives in the workspace

    # Without a champion, text-to-image has no teacher: refused before anything is paid for.
    text_gen = cloud_generator("gemini", ws)
    assert isinstance(text_gen, GeminiImageGenerator)
    with pytest.raises(ValueError, match="no champion"):
        list(text_gen.generate(SynthesisRequest(target_class=0, count=1, prompt="a site"), []))
    assert len(stub.seen) == 1

    with ws.catalog.connect() as con:
        model_id = register_model(con, ws.blobs.put(ppe_pt.read_bytes()), classes=["helmet", "no_helmet", "no_wear",
                                  "wear"], imgsz=320, origin="external")  # fmt: skip
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [model_id])
    imagen = cloud_generator("imagen", ws)
    assert isinstance(imagen, ImagenGenerator) and imagen.teacher is not None
    [r] = imagen.generate(SynthesisRequest(target_class=0, count=1, prompt="a site"), [])
    assert r.lineage["teacher"] == f"champion:{model_id}.pt"
    assert stub.seen[-1].model == "imagen-4.0-fast-generate-001"
    with pytest.raises(ValueError, match="no cloud generator 'dalle'"):
        cloud_generator("dalle", ws)
