"""Run the ingest API in a background thread on a free loopback port.

For the demo and benchmarks: a real uvicorn server, started and stopped in-process.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn

from feedback.ingest.api import create_app
from store.settings import Settings


class BackgroundServer:
    """`with BackgroundServer(settings) as url:` serves the API at `url` until the block ends."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.url = f"http://{host}:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ingest API did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def wait_for_health(proc: subprocess.Popen, url: str, output: Callable[[], str]) -> None:
    """Return once `edgeloop serve` at `url` answers /healthz (60 s at most); if it exits first, raise with the
    tail of its `output`."""
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"edgeloop serve exited: {output()}")
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("edgeloop serve did not answer within 60 s")
