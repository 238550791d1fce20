"""Tests for the operator endpoint over real HTTP on loopback: flag, status, 404, 413."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import supervision as sv

from edge.operator import MAX_BODY_BYTES, OperatorEndpoint
from edge.triggers import HardExampleMiner, TriggerConfig


@pytest.fixture
def flags() -> list[str | None]:
    return []


@pytest.fixture
def endpoint(flags: list[str | None]) -> Iterator[OperatorEndpoint]:
    with OperatorEndpoint(flags.append, lambda: {"fps": 29.5, "uploads": 3}) as server:
        yield server


def test_post_flag_calls_back_and_answers_202(endpoint: OperatorEndpoint, flags: list[str | None]) -> None:
    assert endpoint.url.startswith("http://127.0.0.1:") and endpoint.port > 0
    r = httpx.post(f"{endpoint.url}/flag")
    assert r.status_code == 202 and r.json() == {"flagged": True, "note": None}
    r = httpx.post(f"{endpoint.url}/flag", json={"note": "missed the forklift"})
    assert r.status_code == 202
    assert flags == [None, "missed the forklift"]


def test_a_malformed_flag_body_is_refused(endpoint: OperatorEndpoint, flags: list[str | None]) -> None:
    assert httpx.post(f"{endpoint.url}/flag", content=b"not json").status_code == 400
    assert httpx.post(f"{endpoint.url}/flag", json={"note": 3}).status_code == 400
    assert flags == []


def test_get_status_returns_the_live_snapshot(endpoint: OperatorEndpoint) -> None:
    r = httpx.get(f"{endpoint.url}/status")
    assert r.status_code == 200 and r.json() == {"fps": 29.5, "uploads": 3}


def test_anything_else_is_404(endpoint: OperatorEndpoint) -> None:
    assert httpx.get(f"{endpoint.url}/flag").status_code == 404
    assert httpx.post(f"{endpoint.url}/status").status_code == 404
    assert httpx.get(f"{endpoint.url}/").status_code == 404
    assert httpx.delete(f"{endpoint.url}/flag").status_code == 404


def test_an_oversized_body_is_refused_with_413_before_it_is_read(endpoint: OperatorEndpoint, flags: list[str | None]) -> None:
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=5)
    conn.putrequest("POST", "/flag")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()  # the body is never sent: the server must answer on the declared length
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    assert flags == []
    assert httpx.post(f"{endpoint.url}/flag", content=b" " * MAX_BODY_BYTES).status_code == 202  # the cap itself is fine


def test_a_flag_over_http_makes_the_miner_upload_the_next_frame() -> None:
    miner = HardExampleMiner(TriggerConfig(random_rate=0.0, budget_per_hour=0))
    frame, nothing = np.zeros((8, 8, 3), np.uint8), sv.Detections.empty()
    with OperatorEndpoint(miner.flag, miner.stats) as server:
        assert httpx.post(f"{server.url}/flag", json={"note": "wrong"}).status_code == 202
        decision = miner.observe(frame, nothing, 0)
        assert decision is not None and decision.triggers == ["operator"] and decision.note == "wrong"
        assert httpx.get(f"{server.url}/status").json()["fired"]["operator"] == 1
