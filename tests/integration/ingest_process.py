"""`edgeloop serve` in its own process on a free loopback port, for the tests that meet the real ingest API.
One start-up, health wait (the product's own `wait_for_health`), metrics read and shutdown for all of them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import httpx

from feedback.ingest.serving import wait_for_health


def free_port() -> int:
    """A loopback port free now; the server binds it a moment later, as nothing else on a test machine races it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`edgeloop serve` on `workspace` at `url`: a real process, so a test can stop it and start it again on the
    same port (as an API that goes away and comes back). Its output goes to `log`, or nowhere without one."""

    def __init__(self, workspace: Path, log: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.workspace, self.log = workspace, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        """Start serving and return the URL once /healthz answers; if it never does, kill it and raise with the
        tail of its log."""
        cmd = [sys.executable, "-m", "flows", "serve", "--port", str(self.port), "--workspace", str(self.workspace)]
        # A file, not a pipe nobody reads: a full pipe would stall the server.
        with self.log.open("ab") if self.log else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_health(self.proc, self.url, self.tail)
        except RuntimeError:
            self.proc.kill()
            raise
        return self.url

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log else "(its output was not kept)"

    def stop(self) -> None:
        """SIGTERM, as a deploy stops it; a no-op when it is not running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def metric(self, sample: str) -> float:
        """The value of one Prometheus sample (`name{labels}`) at /metrics; 0 until the API has counted one."""
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(f"{sample} "):
                return float(line.split()[-1])
        return 0.0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
