"""A TCP proxy in front of the ingest API that sees every request for one artifact: the site's uplink in the
download tests. It records each Range asked for; a subclass shapes the answers (cut off, slowed down)."""

from __future__ import annotations

import re
import socket
import threading
from typing import Any


class ArtifactLink:
    """Relays each connection to `upstream` in two threads (`_requests`, `_responses`) that share what
    `_connection()` makes for it; `url` is where a device is pointed instead of the API."""

    def __init__(self, upstream: str, path: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream, self.path = (host, int(port)), path
        self.ranges: list[str | None] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            state = self._connection()
            threading.Thread(target=self._requests, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._responses, args=(server, client, state), daemon=True).start()

    def _asks_for_path(self, data: bytes) -> bool:
        """Whether `data` is a GET of `path`; if it is, its Range header (None without one) joins `ranges`."""
        if f"GET {self.path} ".encode() not in data:
            return False
        found = re.search(rb"\r\nrange: *([^\r]+)", data, re.IGNORECASE)
        self.ranges.append(found[1].decode() if found else None)
        return True

    def _connection(self) -> Any:
        """What the two relays of one connection share."""
        return None

    def _requests(self, src: socket.socket, dst: socket.socket, state: Any) -> None:
        raise NotImplementedError

    def _responses(self, src: socket.socket, dst: socket.socket, state: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()
