"""Webhook alerts from the device: one signed POST per tracked object of an alert class.

Signed the Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature); `verify` is the receiver's side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx
import numpy as np
import supervision as sv

from edge.client import retry_after_s

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# The confidence an alert class must reach when neither the person (`min_confidence`) nor the
# model (a threshold of its own for the class) says otherwise.
DEFAULT_ALERT_CONFIDENCE = 0.85
SIGNATURE_VERSION = "v1"
ALERT_TYPE = "detection.alert"
# 408 and 429 mean "later", as does any 5xx; every other 4xx will not get better by asking again.
_RETRY_STATUSES = frozenset({408, 429})


@dataclass
class AlertConfig:
    """Where alerts go, how they are signed, which detections raise one, and how hard to try."""

    webhook_url: str
    secret: str
    """`whsec_<base64>` (the key is the decoded bytes, per the spec) or a raw string (its UTF-8 bytes)."""
    classes: set[str]
    min_confidence: float | None = None
    """The confidence every alert class must reach, when a person set one. None: each class its own
    threshold in the running model (see `Alerter.set_thresholds`), else DEFAULT_ALERT_CONFIDENCE."""
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    queue_size: int = 1000
    remembered_tracks: int = 10_000
    """How many alerted tracker ids are remembered (oldest forgotten first)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.queue_size < 1 or self.remembered_tracks < 1:
            raise ValueError("max_attempts, queue_size and remembered_tracks must be >= 1")
        _key(self.secret)  # a malformed whsec_ secret should fail at start-up, not on the first alert


def _key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be followed by base64") from exc
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    payload = f"{msg_id}.{timestamp}.".encode() + (body.encode() if isinstance(body, str) else body)
    digest = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when `headers` carry a valid signature of `body` made within `tolerance_s` of now.

    `headers` is any mapping with `.items()` (names in any case). The signature header may list
    several space-separated signatures (key rotation); one valid `v1` signature suffices.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    # The timestamp is signed, so this bounds how long a captured request can be replayed.
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in signatures.split())


@dataclass(frozen=True)
class _Alert:
    msg_id: str  # the same on every attempt, so the receiver can deduplicate retries
    body: bytes


class Alerter:
    """Turns tracked detections into webhook alerts, delivered by a background thread.

    `observe` never blocks the frame loop: it only appends to a bounded queue (dropping the
    oldest alert when full). Detections without a confirmed `tracker_id` are ignored: an
    object alerts once, on the first frame its track reaches its class's alert confidence
    (`alert_confidence`). Between attempts it waits with `wait(event, seconds)`, like
    `threading.Event.wait`.
    """

    def __init__(
        self,
        config: AlertConfig,
        device: str,
        camera: str,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
        thresholds: Mapping[int, float] | None = None,
    ) -> None:
        self.config, self.device, self.camera = config, device, camera
        self._wait = wait
        self._thresholds: dict[int, float] = dict(thresholds or {})
        self._classes = np.array(sorted(config.classes), dtype=object)
        self._alerted: OrderedDict[int, None] = OrderedDict()  # used as a bounded, ordered set
        self._queue: deque[_Alert] = deque()
        self._cond = threading.Condition()  # guards the queue, the counters and the closing flag
        self._closing = False
        self._abort = threading.Event()  # set when close() gives up: cuts short any backoff wait
        self._stats = {"sent": 0, "failed": 0, "dropped": 0, "retries": 0}
        self._jitter = random.Random()
        self._thread = threading.Thread(target=self._run, name="alerter", daemon=True)
        self._thread.start()

    def set_thresholds(self, thresholds: Mapping[int, float]) -> None:
        """The running model's per-class thresholds (class id -> confidence; empty: none), used from
        the next observed frame unless `config.min_confidence` is set. The agent calls this on every swap."""
        self._thresholds = dict(thresholds)  # one reference swap, as the frame loop reads it

    def alert_confidence(self, class_id: int) -> float:
        """The confidence a tracked object of class `class_id` must reach to alert: the person's
        `min_confidence` if set, else the class's own threshold in the running model, else 0.85."""
        if self.config.min_confidence is not None:
            return self.config.min_confidence
        return self._thresholds.get(class_id, DEFAULT_ALERT_CONFIDENCE)

    def observe(self, detections: sv.Detections, frame_index: int, captured_at: datetime) -> None:
        """Queues an alert for each tracked object of an alert class seen confident for the first time."""
        names = detections.data.get("class_name")
        if len(detections) == 0 or detections.tracker_id is None or detections.confidence is None or names is None:
            return
        classes = detections.class_id if detections.class_id is not None else np.full(len(detections), -1)
        # In the scores' own dtype, as the detector compared them: a box it kept at exactly its class's
        # threshold must not miss the same threshold here by a float32 -> float64 rounding.
        required = np.array([self.alert_confidence(int(c)) for c in classes], dtype=detections.confidence.dtype)
        hot = (
            (detections.tracker_id >= 0)
            & (detections.confidence >= required)
            & np.isin(np.asarray(names, dtype=object), self._classes)
        )
        for i in np.flatnonzero(hot):
            tracker_id = int(detections.tracker_id[i])
            if tracker_id in self._alerted:
                continue
            self._alerted[tracker_id] = None
            if len(self._alerted) > self.config.remembered_tracks:
                self._alerted.popitem(last=False)
            payload = {
                "type": ALERT_TYPE,
                "device": self.device,
                "camera": self.camera,
                "class_name": str(names[i]),
                "confidence": float(detections.confidence[i]),
                "xyxy": [float(v) for v in detections.xyxy[i]],
                "tracker_id": tracker_id,
                "frame_index": int(frame_index),
                "captured_at": captured_at.isoformat(),
            }
            body = json.dumps(payload, separators=(",", ":")).encode()
            self._enqueue(_Alert(msg_id=f"msg_{uuid.uuid4().hex}", body=body))

    def stats(self) -> dict[str, int]:
        """sent, failed (gave up or refused), dropped (queue full or left at close), retries, queued."""
        with self._cond:
            return {**self._stats, "queued": len(self._queue)}

    def close(self, timeout: float = 10.0) -> bool:
        """Delivers what is queued, waiting at most `timeout` seconds; True when all went out."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(self.config.timeout_s + 1)  # at worst one request still in flight
        with self._cond:
            left = len(self._queue)
            self._stats["dropped"] += left
            self._queue.clear()
        return left == 0 and not self._thread.is_alive()

    def _enqueue(self, alert: _Alert) -> None:
        with self._cond:
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()  # the newest alerts matter most when the receiver is down
                self._stats["dropped"] += 1
            self._queue.append(alert)
            self._cond.notify()

    def _count(self, key: str) -> None:
        with self._cond:
            self._stats[key] += 1

    def _run(self) -> None:
        with httpx.Client(timeout=self.config.timeout_s) as http:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue or self._abort.is_set():
                        return
                    alert = self._queue.popleft()
                self._deliver(http, alert)

    def _deliver(self, http: httpx.Client, alert: _Alert) -> None:
        cfg = self.config
        for attempt in range(1, cfg.max_attempts + 1):
            timestamp = int(time.time())  # re-signed per attempt, so a late retry still passes the receiver's tolerance
            headers = {
                "content-type": "application/json",
                "webhook-id": alert.msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(cfg.secret, alert.msg_id, timestamp, alert.body),
            }
            retry_after: float | None = None
            try:
                response = http.post(cfg.webhook_url, content=alert.body, headers=headers)
            except httpx.TransportError as exc:
                log.warning("alert %s attempt %d: %s", alert.msg_id, attempt, exc)
            except Exception:  # a bad URL and the like: retrying cannot help, and the thread must live on
                log.exception("alert %s cannot be sent", alert.msg_id)
                self._count("failed")
                return
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._count("sent")
                    return
                if status < 500 and status not in _RETRY_STATUSES:
                    log.error("alert %s refused: HTTP %d", alert.msg_id, status)
                    self._count("failed")
                    return
                log.warning("alert %s attempt %d: HTTP %d", alert.msg_id, attempt, status)
                retry_after = retry_after_s(response)
            if attempt == cfg.max_attempts:
                break
            if self._wait(self._abort, self._backoff(attempt, retry_after)):
                self._count("dropped")  # close() gave up on it
                return
            self._count("retries")
        log.error("alert %s given up after %d attempts", alert.msg_id, cfg.max_attempts)
        self._count("failed")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with jitter (so devices don't retry in step); Retry-After is a floor, capped."""
        cfg = self.config
        delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1)) * self._jitter.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.backoff_max_s))
        return delay
