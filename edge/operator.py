"""The agent's local operator endpoint: `POST /flag` marks the current frame as wrong, `GET /status` shows live stats.

A stdlib HTTP server in a daemon thread, bound to loopback by default: it has no authentication.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


class OperatorEndpoint:
    """Serves `/flag` and `/status` until `close()`; `port=0` picks a free port (see `.url`).

    `on_flag(note)` is called from a server thread, so it must be thread-safe
    (`HardExampleMiner.flag` is). `status()` returns a JSON-serialisable mapping.
    """

    def __init__(
        self,
        on_flag: Callable[[str | None], None],
        status: Callable[[], Mapping[str, Any]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        handler = type("_BoundHandler", (_Handler,), {"on_flag": staticmethod(on_flag), "status": staticmethod(status)})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        # A short poll keeps close() quick; it costs ten wake-ups a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="operator-endpoint", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> OperatorEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    on_flag: Callable[[str | None], None]
    status: Callable[[], Mapping[str, Any]]
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/flag":
            self._not_found()
            return
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True  # without a length the body's end is unknown
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "bad content-length"})
            return
        if length > MAX_BODY_BYTES:
            # Refused on the declared length, before reading a byte; the unread body would
            # confuse the next request on this connection, so the connection is closed.
            self.close_connection = True
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        raw = self.rfile.read(length) if length else b""
        note: str | None = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("note", ""), str | None):
                self._reply(HTTPStatus.BAD_REQUEST, {"error": 'expected JSON {"note": "..."}'})
                return
            note = body.get("note") or None
        self.on_flag(note)
        self._reply(HTTPStatus.ACCEPTED, {"flagged": True, "note": note})

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/status":
            self._not_found()
            return
        try:
            snapshot = self.status()
        except Exception:  # a broken stats source must not take the endpoint down
            log.exception("operator endpoint: status() failed")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "status unavailable"})
            return
        self._reply(HTTPStatus.OK, snapshot)

    def _not_found(self) -> None:
        # Any body is left unread, and would be taken for the next request: hang up after this.
        self.close_connection = True
        self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

    do_PUT = do_DELETE = do_PATCH = _not_found

    def _reply(self, status: HTTPStatus, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload, default=str).encode()  # default=str: datetimes and the like in stats
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("operator endpoint: " + format, *args)
