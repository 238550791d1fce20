"""Tests for the uploader against a stand-in HTTP server on loopback, for faults the real API cannot produce.

It fails on purpose (503/429 with Retry-After, lost answers, outages); real refusals: tests/integration/test_uploader_auth.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.protocol import CAPTURES_PATH, CREDENTIAL_REASONS, HEARTBEAT_PATH, CaptureMeta, Heartbeat, SourceRef, utc_now
from edge.spool import Spool
from edge.uploader import Uploader
from tests.edge.uploaders import Uploaders, spool_fixture  # noqa: F401 (the `spool` fixture)
from tests.polling import holds_within

TOKEN = "test-token"
DROPPED = 0  # the status recorded for a request the server stored but never answered


class VirtualTime:
    """The uploader's clock and wait: a timed wait returns at once and moves the clock on by
    its timeout, so waits are exact and the suite never races the machine's clock.

    A wait that would pass `until`, or one without a timeout, really blocks until the uploader
    is woken (a put, stop()); `parked` is set meanwhile, `waits` holds every timeout asked for.
    """

    def __init__(self, until: float = math.inf) -> None:
        self.now = 0.0
        self.until = until
        self.waits: list[float | None] = []
        self.parked = threading.Event()

    def clock(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        self.waits.append(timeout)
        if event.is_set():
            return True
        if timeout is not None and self.now + timeout <= self.until:
            self.now += timeout
            return False
        self.parked.set()
        event.wait()
        self.parked.clear()
        return True


class FakeIngest:
    """Stands in for the ingest API: `POST /v1/captures` (multipart `meta` + `image`,
    idempotent on the image sha256) and `POST /v1/heartbeat`.

    `script` forces the next capture answers: "503" or "429" (with Retry-After: 1), or
    "drop" (store the capture, then hang up without answering). `stop()` / `start()`
    take it off the air and back on the same port. A token other than `token` is refused
    with `refusal` (status, reason), a reason of the protocol's. `clock` stamps attempts.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[str, CaptureMeta] = {}
        self.attempts: list[tuple[float, str, int]] = []  # (clock time, sha256, status)
        self.heartbeats: list[Heartbeat] = []
        self.script: list[str] = []
        self.token = TOKEN
        # Any of the protocol's credential reasons: the uploader must treat them alike (tested below).
        self.refusal: tuple[int, str] = (401, min(CREDENTIAL_REASONS))
        self.clock: Callable[[], float] = time.monotonic
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)  # SO_REUSEADDR: same port again
        server.ingest = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # from now on: connection refused
            self._server = None

    def statuses(self, sha: str) -> list[int]:
        with self.lock:
            return [status for _, s, status in self.attempts if s == sha]


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stopping the server really cuts devices off.
    protocol_version = "HTTP/1.0"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_POST(self) -> None:
        ingest: FakeIngest = self.server.ingest  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Authorization") != f"Bearer {ingest.token}":
            status, reason = ingest.refusal
            self._answer(status, {"reason": reason, "detail": "the stand-in refuses this token"})
        elif self.path == HEARTBEAT_PATH:
            heartbeat = Heartbeat.model_validate_json(body)
            with ingest.lock:
                ingest.heartbeats.append(heartbeat)
            self._answer(201, {"id": f"hb-{len(ingest.heartbeats)}"})
        elif self.path == CAPTURES_PATH:
            self._capture(ingest, body)
        else:
            self._answer(404, {"reason": "not_found", "detail": self.path})

    def _capture(self, ingest: FakeIngest, body: bytes) -> None:
        parts = _multipart(self.headers["Content-Type"], body)
        sha = hashlib.sha256(parts["image"]).hexdigest()
        with ingest.lock:
            forced = ingest.script.pop(0) if ingest.script else None
        if forced in ("503", "429"):
            self._record(ingest, sha, int(forced))
            self._answer(int(forced), {"reason": "busy", "detail": "later"}, {"Retry-After": "1"})
            return
        meta = CaptureMeta.model_validate_json(parts["meta"])  # a bad one is a bug here: no answer, the test fails
        with ingest.lock:
            duplicate = sha in ingest.stored
            ingest.stored.setdefault(sha, meta)
        if forced == "drop":  # stored, but the answer is lost: the connection just closes
            self._record(ingest, sha, DROPPED)
            return
        status = 200 if duplicate else 201
        self._record(ingest, sha, status)
        self._answer(status, {"id": sha, "sha256": sha, "duplicate": duplicate})

    def _record(self, ingest: FakeIngest, sha: str, status: int) -> None:
        with ingest.lock:
            ingest.attempts.append((ingest.clock(), sha, status))

    def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by name (enough for what httpx sends)."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    parts = {}
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        assert name is not None
        parts[name.group(1).decode()] = data.removesuffix(b"\r\n")
    return parts


def _meta(i: int) -> bytes:
    return (
        CaptureMeta(
            device="jetson-1",
            camera="gate",
            captured_at=utc_now(),
            frame_width=640,
            frame_height=480,
            model_version="yolo-v1",
            triggers=["uncertainty"],
            source=SourceRef(uri="rtsp://camera/1", frame_index=i),
        )
        .model_dump_json()
        .encode()
    )


def _put(spool: Spool, i: int) -> str:
    """Put capture `i` and return its image sha256."""
    image = os.urandom(3000)
    spool.put(_meta(i), image, "image/jpeg")
    return hashlib.sha256(image).hexdigest()


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    return holds_within(condition, timeout)


@pytest.fixture
def ingest() -> Iterator[FakeIngest]:
    server = FakeIngest()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_uploader(spool: Spool, ingest: FakeIngest) -> Iterator[Callable[..., Uploader]]:
    uploaders = Uploaders(spool, ingest.url, timeout_s=5)

    def make(token: list[str] | None = None, vtime: VirtualTime | None = None, **kwargs: object) -> Uploader:
        """`token[0]` is read by the client factory, as a device re-reads its config; `vtime` runs its clock."""
        if vtime is not None:
            kwargs.update(clock=vtime.clock, wait=vtime.wait)
            ingest.clock = vtime.clock
        return uploaders.start(token or [TOKEN], **kwargs)

    yield make
    for uploader in uploaders.started:
        assert uploader.stop(timeout=5)


def test_outage_grows_the_spool_then_drains_it_exactly_once(spool: Spool, ingest: FakeIngest, make_uploader) -> None:
    uploader = make_uploader()
    shas = [_put(spool, i) for i in range(5)]
    assert uploader.flush(10)

    ingest.stop()
    shas += [_put(spool, i) for i in range(5, 25)]  # the frame loop carries on regardless
    assert _wait_until(lambda: uploader.retries >= 3)
    assert spool.depth() == 20 and "ConnectError" in (uploader.last_error or "")

    ingest.start()  # same port
    shas += [_put(spool, i) for i in range(25, 30)]
    assert uploader.flush(15)

    assert set(ingest.stored) == set(shas) and len(shas) == 30
    created = Counter(sha for _, sha, status in ingest.attempts if status == 201)
    assert all(created[sha] == 1 for sha in shas)
    assert (uploader.uploaded, uploader.duplicates, uploader.rejected) == (30, 0, 0)
    assert spool.depth() == 0 and list((spool.root / "ready").iterdir()) == []


def test_a_lost_answer_is_retried_and_counted_as_duplicate(spool: Spool, ingest: FakeIngest, make_uploader) -> None:
    ingest.script = ["drop"]
    uploader = make_uploader()
    sha = _put(spool, 0)
    assert uploader.flush(10)
    assert list(ingest.stored) == [sha]
    assert ingest.statuses(sha) == [DROPPED, 200]
    assert (uploader.uploaded, uploader.duplicates, uploader.retries) == (1, 1, 1)


@pytest.mark.parametrize("reason", sorted(CREDENTIAL_REASONS))
def test_a_refused_token_keeps_the_entries_until_the_token_is_fixed(
    spool: Spool, ingest: FakeIngest, make_uploader, reason: str
) -> None:
    # 403, not 401: only the reason can tell the uploader that the token, not the capture, was refused.
    ingest.refusal = (403, reason)
    token = ["old-token"]  # read by the client factory, as a device re-reads its config
    uploader = make_uploader(token=token)
    sha = _put(spool, 0)
    assert _wait_until(lambda: uploader.retries >= 2)
    assert spool.depth() == 1 and uploader.rejected == 0 and f"403 {reason}" in (uploader.last_error or "")
    assert list((spool.root / "rejected").iterdir()) == []

    token[0] = TOKEN
    assert uploader.flush(10)
    assert list(ingest.stored) == [sha] and uploader.rejected == 0


@pytest.mark.parametrize("status", ["503", "429"])
def test_retry_after_is_honoured(spool: Spool, ingest: FakeIngest, make_uploader, status: str) -> None:
    vtime = VirtualTime()
    ingest.script = [status]
    uploader = make_uploader(vtime=vtime, backoff_base_s=0.01, backoff_max_s=5)
    sha = _put(spool, 0)
    assert uploader.flush(10)
    (t_busy, _, first), (t_ok, _, second) = [a for a in ingest.attempts if a[1] == sha]
    assert (first, second) == (int(status), 201)
    # Retry-After: 1, to the uploader's clock; its own backoff alone would have waited 0.01 at most.
    assert t_ok - t_busy == pytest.approx(1.0)


def test_heartbeats_are_sent_every_interval(spool: Spool, ingest: FakeIngest, make_uploader) -> None:
    vtime = VirtualTime(until=100)
    built_at: list[float] = []

    def heartbeat() -> Heartbeat:
        built_at.append(vtime.now)
        return Heartbeat(
            device="jetson-1",
            sent_at=utc_now(),
            model_version="yolo-v1",
            fps=25.0,
            inference_ms_p50=12.0,
            inference_ms_p99=30.0,
            queue_depth=spool.depth(),
        )

    uploader = make_uploader(vtime=vtime, heartbeat=heartbeat, heartbeat_interval_s=30)
    assert _wait_until(vtime.parked.is_set)  # the next one, at 120, lies past the end of time
    assert built_at == [0, 30, 60, 90]
    assert uploader.heartbeats_sent == 4 and len(ingest.heartbeats) == 4 and ingest.heartbeats[0].device == "jetson-1"


def test_stop_wakes_the_thread_from_a_backoff_wait(spool: Spool, ingest: FakeIngest, make_uploader) -> None:
    vtime = VirtualTime(until=0)  # every timed wait blocks until the uploader is woken
    ingest.stop()
    uploader = make_uploader(vtime=vtime, backoff_base_s=30, backoff_max_s=60)
    _put(spool, 0)
    assert _wait_until(lambda: uploader.retries >= 1 and vtime.parked.is_set())
    backoff = vtime.waits[-1]
    assert backoff is not None and 0 < backoff <= 30  # parked in the backoff, not idle

    assert uploader.stop(timeout=10)  # the wait had no end of its own: stop() woke it
    assert vtime.now == 0 and uploader.retries == 1
    assert spool.depth() == 1  # still there for the next run
    assert not uploader.flush(0.1)


def test_a_url_with_no_api_behind_it_keeps_the_entries(spool: Spool, ingest: FakeIngest, make_uploader) -> None:
    # The API always has the capture route: a 404 there means the device's server URL is wrong (a path added),
    # which is no fault of the capture and must not send the whole spool to rejected/.
    ingest.refusal = (404, "rejected")
    token = ["a-token-sent-to-the-wrong-url"]
    uploader = make_uploader(token=token)
    sha = _put(spool, 0)
    assert _wait_until(lambda: uploader.retries >= 2)
    assert spool.depth() == 1 and uploader.rejected == 0 and "404" in (uploader.last_error or "")
    assert list((spool.root / "rejected").iterdir()) == []
    token[0] = TOKEN
    assert uploader.flush(10) and list(ingest.stored) == [sha]


def test_holding_after_a_refusal_sends_nothing_more_and_releases_flush(
    spool: Spool, ingest: FakeIngest, make_uploader
) -> None:
    vtime = VirtualTime()
    uploader = make_uploader(token=["refused"], vtime=vtime)
    uploader.hold_when_refused = True  # the agent's setting: its token cannot change while it runs
    _put(spool, 0)
    _put(spool, 1)
    # Held, the thread waits with no deadline: a retrying one would wake at each backoff and try again.
    assert _wait_until(lambda: uploader.refusal is not None and vtime.parked.is_set())
    assert uploader.retries == 1 and uploader.refused == 1 and "401" in str(uploader.refusal)
    # An hour's flush: were a refusal not to release it, the test would hang into pytest's timeout and fail.
    assert uploader.flush(3600) is False
    assert spool.depth() == 2 and list((spool.root / "rejected").iterdir()) == []
