"""ASGI middleware that caps request bodies while they stream in and records metrics.

The cap is checked on the declared Content-Length first and then on every chunk received,
so a client that lies or streams without a length is stopped at the limit, not after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from feedback.ingest.metrics import IngestMetrics
from feedback.ingest.problems import Rejected

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Fixed labels keep the metric cardinality bounded whatever paths clients try.
_KNOWN_PATHS = ("/v1/captures", "/v1/heartbeat", "/v1/whoami", "/healthz", "/metrics", "/openapi.json", "/docs")


def too_large(limit: int) -> Rejected:
    # Connection: close, so the server stops reading the rest of the body it refused.
    return Rejected(413, "body_too_large", f"request body exceeds the limit of {limit} bytes", {"Connection": "close"})


class LimitAndMeasure:
    @staticmethod
    def path_label(path: str) -> str:
        if path.startswith("/v1/blobs/"):
            return "/v1/blobs"
        return path if path in _KNOWN_PATHS else "other"

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: IngestMetrics) -> None:
        self.app, self.limit, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = self.path_label(scope["path"])
        status = 500
        received = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large(self.limit)
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.limit:
                await self._refuse(send_and_note, too_large(self.limit))
            else:
                await self.app(scope, counted_receive, send_and_note)
        finally:
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.bytes_received.labels(path).inc(received)
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)

    async def _refuse(self, send: Send, problem: Rejected) -> None:
        self.metrics.rejections.labels(problem.reason).inc()
        body = json.dumps({"reason": problem.reason, "detail": problem.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": problem.status,
                "headers": [(b"content-type", b"application/json")]
                + [(k.lower().encode(), v.encode()) for k, v in (problem.headers or {}).items()],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
