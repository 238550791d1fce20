"""Tests for webhook alerts against a real receiver on loopback that verifies every signature.

The receiver can answer with scripted statuses (503 with Retry-After, 400) to exercise retries, or
hold its answers; the waits between attempts go to a manual clock, so no test waits for real time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import supervision as sv

from edge.alerts import DEFAULT_ALERT_CONFIDENCE, AlertConfig, Alerter, sign, verify
from tests.edge.manual_clock import ManualClock

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CAPTURED_AT = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)


class Receiver:
    """A webhook endpoint: verifies each request with `verify` and records it.

    `script` holds the statuses of the next answers (then 200); a 503 carries `Retry-After`.
    While `hold` is set, requests are counted in `arrived` and wait for it to be cleared.
    """

    def __init__(self, retry_after: str = "0") -> None:
        self.lock = threading.Lock()
        self.deliveries: list[dict] = []  # every request: id, verified, status, payload
        self.script: list[int] = []
        self.retry_after = retry_after
        self.hold = threading.Event()
        self.released = threading.Event()
        self.arrived = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ReceiverHandler)
        self.server.receiver = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/edge"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [d for d in self.deliveries if d["status"] == 200]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.accepted()) < count:
            time.sleep(0.01)
        return self.accepted()

    def release(self) -> None:
        self.hold.clear()
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["content-length"]))
        with receiver.lock:
            receiver.arrived += 1
        if receiver.hold.is_set():
            receiver.released.wait(60)
        verified = verify(SECRET, self.headers, body)
        with receiver.lock:
            status = receiver.script.pop(0) if receiver.script else 200
            receiver.deliveries.append(
                {
                    "id": self.headers["webhook-id"],
                    "verified": verified,
                    "status": status,
                    "payload": json.loads(body),
                }
            )
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", receiver.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def config(url: str, **overrides: object) -> AlertConfig:
    settings = dict(webhook_url=url, secret=SECRET, classes={"person"}, backoff_base_s=0.01, backoff_max_s=0.5)
    return AlertConfig(**{**settings, **overrides})  # type: ignore[arg-type]


def dets(*items: tuple[int, str, float]) -> sv.Detections:
    """Tracked detections from (tracker_id, class_name, confidence) triples."""
    n = len(items)
    return sv.Detections(
        xyxy=np.array([[10.0 + 50 * i, 20.0, 40.0 + 50 * i, 90.0] for i in range(n)]),
        confidence=np.array([c for _, _, c in items]),
        class_id=np.zeros(n, dtype=int),
        tracker_id=np.array([t for t, _, _ in items]),
        data={"class_name": np.array([name for _, name, _ in items])},
    )


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {"Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "Webhook-Timestamp": "1614265330", "Webhook-Signature": expected}
    assert verify(SECRET, headers, body, now=1614265330 + 10)
    assert not verify(SECRET, headers, body)  # years old: outside the tolerance


def test_verify_rejects_tampering_wrong_keys_and_accepts_rotation() -> None:
    now = int(time.time())
    body = b'{"type":"detection.alert","class_name":"person"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sign("plain secret", "msg_1", now, body)}
    assert verify("plain secret", headers, body)  # a raw secret: its UTF-8 bytes are the key
    assert not verify("plain secret", headers, body.replace(b"person", b"nobody"))
    assert not verify("other secret", headers, body)
    assert not verify("plain secret", {**headers, "webhook-id": "msg_2"}, body)
    assert not verify("plain secret", {k: v for k, v in headers.items() if k != "webhook-signature"}, body)
    rotated = {**headers, "webhook-signature": f"v1,bm90IGl0 {headers['webhook-signature']}"}
    assert verify("plain secret", rotated, body)


def test_a_tracked_object_above_threshold_for_30_frames_alerts_exactly_once(receiver: Receiver) -> None:
    alerter = Alerter(config(receiver.url), device="jetson-01", camera="gate")
    for frame in range(30):
        alerter.observe(dets((5, "person", 0.93)), frame_index=100 + frame, captured_at=CAPTURED_AT)
    assert alerter.close(timeout=5)
    [delivery] = receiver.wait_for(1)
    assert delivery["verified"]
    assert delivery["payload"] == {
        "type": "detection.alert",
        "device": "jetson-01",
        "camera": "gate",
        "class_name": "person",
        "confidence": 0.93,
        "xyxy": [10.0, 20.0, 40.0, 90.0],
        "tracker_id": 5,
        "frame_index": 100,
        "captured_at": "2025-05-01T12:00:00+00:00",
    }
    assert alerter.stats() == {"sent": 1, "failed": 0, "dropped": 0, "retries": 0, "queued": 0}


def test_two_objects_alert_twice_and_a_late_riser_alerts_when_it_crosses(receiver: Receiver) -> None:
    alerter = Alerter(config(receiver.url), device="jetson-01", camera="gate")
    for frame in range(10):
        late = 0.5 if frame < 6 else 0.9
        alerter.observe(dets((1, "person", 0.9), (2, "person", 0.88), (3, "person", late)), frame, CAPTURED_AT)
    assert alerter.close(timeout=5)
    deliveries = receiver.wait_for(3)
    assert sorted(d["payload"]["tracker_id"] for d in deliveries) == [1, 2, 3]
    assert {d["payload"]["tracker_id"]: d["payload"]["frame_index"] for d in deliveries}[3] == 6
    assert len({d["id"] for d in deliveries}) == 3 and all(d["verified"] for d in deliveries)


def test_low_confidence_other_classes_and_untracked_boxes_never_alert(receiver: Receiver) -> None:
    alerter = Alerter(config(receiver.url), device="jetson-01", camera="gate")
    for frame in range(20):
        alerter.observe(dets((1, "person", 0.84), (2, "car", 0.99), (-1, "person", 0.99)), frame, CAPTURED_AT)
    alerter.observe(sv.Detections.empty(), 20, CAPTURED_AT)
    assert alerter.close(timeout=5)  # the queue is empty and the sender has stopped: nothing more can arrive
    assert receiver.deliveries == []
    assert alerter.stats() == {"sent": 0, "failed": 0, "dropped": 0, "retries": 0, "queued": 0}


def test_a_503_is_retried_with_the_same_id_after_retry_after() -> None:
    receiver = Receiver(retry_after="0.3")
    receiver.script = [503]
    clock = ManualClock()
    try:
        alerter = Alerter(config(receiver.url), device="jetson-01", camera="gate", wait=clock.wait)
        alerter.observe(dets((9, "person", 0.95)), 1, CAPTURED_AT)
        assert alerter.close(timeout=5)
        first, second = receiver.deliveries
        assert (first["status"], second["status"]) == (503, 200)
        assert first["id"] == second["id"] and first["verified"] and second["verified"]
        assert clock.waits == [0.3]  # Retry-After honoured over the 10 ms backoff
        assert alerter.stats() == {"sent": 1, "failed": 0, "dropped": 0, "retries": 1, "queued": 0}
    finally:
        receiver.close()


def test_gives_up_after_max_attempts_and_never_retries_a_400(receiver: Receiver) -> None:
    receiver.script = [503, 429, 503, 400]
    clock = ManualClock()
    alerter = Alerter(config(receiver.url, max_attempts=3), device="jetson-01", camera="gate", wait=clock.wait)
    alerter.observe(dets((1, "person", 0.95)), 1, CAPTURED_AT)
    alerter.observe(dets((2, "person", 0.95)), 2, CAPTURED_AT)
    assert alerter.close(timeout=5)
    statuses = [(d["payload"]["tracker_id"], d["status"]) for d in receiver.deliveries]
    assert statuses == [(1, 503), (1, 429), (1, 503), (2, 400)]
    first, second = clock.waits  # none after the last attempt, none after a 400
    assert 0.005 <= first <= 0.01 <= second <= 0.02  # 10 ms doubling, each jittered down by up to half
    assert alerter.stats() == {"sent": 0, "failed": 2, "dropped": 0, "retries": 2, "queued": 0}


def test_observe_does_not_wait_for_a_delivery_in_flight(receiver: Receiver) -> None:
    receiver.hold.set()  # the receiver takes the first request and does not answer
    alerter = Alerter(config(receiver.url, queue_size=10), device="jetson-01", camera="gate")
    alerter.observe(dets((0, "person", 0.95)), 0, CAPTURED_AT)
    deadline = time.monotonic() + 30
    while receiver.arrived == 0:
        assert time.monotonic() < deadline, "the first alert never reached the receiver"
        time.sleep(0.01)

    def frame_loop() -> None:
        for frame in range(1, 1000):
            alerter.observe(dets((frame, "person", 0.95)), frame, CAPTURED_AT)

    loop = threading.Thread(target=frame_loop, daemon=True)
    loop.start()
    loop.join(timeout=60)
    assert not loop.is_alive(), "observe() waited on the delivery in flight"
    # The queue keeps the newest ten; the rest were dropped, none lost silently.
    assert alerter.stats() == {"sent": 0, "failed": 0, "dropped": 989, "retries": 0, "queued": 10}

    receiver.release()
    assert alerter.close(timeout=30)
    assert sorted(d["payload"]["tracker_id"] for d in receiver.accepted()) == [0, *range(990, 1000)]
    assert alerter.stats() == {"sent": 11, "failed": 0, "dropped": 989, "retries": 0, "queued": 0}


class StoppedClock(ManualClock):
    """A clock on which a wait lasts until its event is set (a minute at most), however short it was asked to be."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        return event.wait(60)


def test_close_gives_up_on_a_receiver_that_is_down() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = StoppedClock()
    alerter = Alerter(
        config(f"http://127.0.0.1:{port}/", queue_size=10), device="jetson-01", camera="gate", wait=clock.wait
    )
    for frame in range(1000):
        alerter.observe(dets((frame, "person", 0.95)), frame, CAPTURED_AT)
    stats = alerter.stats()
    assert stats["queued"] == 10 and stats["dropped"] >= 1000 - 10 - 1  # one may be in flight

    deadline = time.monotonic() + 30
    while not clock.waits:
        assert time.monotonic() < deadline, "the first delivery attempt never came to its backoff"
        time.sleep(0.01)
    # The alert in flight sits in a backoff that would never end: close() must cut it short.
    assert not alerter.close(timeout=0.2)  # could not flush: the receiver is down
    assert len(clock.waits) == 1
    assert alerter.stats() == {"sent": 0, "failed": 0, "dropped": 1000, "retries": 0, "queued": 0}


def test_a_malformed_whsec_secret_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="base64"):
        AlertConfig(webhook_url="http://127.0.0.1:9/", secret="whsec_not*base64", classes={"person"})


# -- per-class operating points -----------------------------------------------------------------------


def classed(*items: tuple[int, int, str, float]) -> sv.Detections:
    """Tracked detections from (tracker_id, class_id, class_name, confidence)."""
    tracked = dets(*[(t, name, c) for t, _, name, c in items])
    tracked.class_id = np.array([k for _, k, _, _ in items])
    return tracked


def test_an_alert_class_alerts_at_its_own_threshold_in_the_model(receiver: Receiver) -> None:
    # person's threshold in the model is 0.7: 0.75 alerts although it is under the default 0.85.
    alerter = Alerter(config(receiver.url, classes={"person", "car"}), device="jetson-01", camera="gate",
                      thresholds={0: 0.7})
    assert alerter.alert_confidence(0) == 0.7 and alerter.alert_confidence(1) == DEFAULT_ALERT_CONFIDENCE == 0.85
    for frame in range(5):
        alerter.observe(classed((1, 0, "person", 0.75), (2, 1, "car", 0.8), (3, 0, "person", 0.69)), frame, CAPTURED_AT)
    assert alerter.close(timeout=5)
    [delivery] = receiver.wait_for(1)
    assert (delivery["payload"]["tracker_id"], delivery["payload"]["confidence"]) == (1, 0.75)


def test_a_minimum_confidence_given_by_a_person_wins_over_the_models_thresholds(receiver: Receiver) -> None:
    alerter = Alerter(config(receiver.url, min_confidence=0.8), device="jetson-01", camera="gate", thresholds={0: 0.7})
    assert alerter.alert_confidence(0) == 0.8
    for frame in range(5):
        alerter.observe(classed((1, 0, "person", 0.75), (2, 0, "person", 0.81)), frame, CAPTURED_AT)
    assert alerter.close(timeout=5)
    assert [d["payload"]["tracker_id"] for d in receiver.wait_for(1)] == [2]


def test_alert_thresholds_follow_the_running_model_and_revert_to_the_default_without_thresholds(
    receiver: Receiver,
) -> None:
    alerter = Alerter(config(receiver.url), device="jetson-01", camera="gate")
    alerter.observe(classed((1, 0, "person", 0.75)), 0, CAPTURED_AT)  # the default 0.85: no alert
    alerter.set_thresholds({0: 0.7})  # a model with person at 0.7 swapped in
    alerter.observe(classed((1, 0, "person", 0.75)), 1, CAPTURED_AT)
    alerter.set_thresholds({})  # and one without
    alerter.observe(classed((2, 0, "person", 0.75)), 2, CAPTURED_AT)
    assert alerter.close(timeout=5)
    assert [(d["payload"]["tracker_id"], d["payload"]["frame_index"]) for d in receiver.wait_for(1)] == [(1, 1)]
