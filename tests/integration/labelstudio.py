"""A real Label Studio for integration tests: found in its own venv, started on loopback, killed after.

Label Studio pins its own Django, so it is installed beside the project venv, never into it.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
INSTALL = "python3 -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install label-studio"


def label_studio_bin() -> Path | None:
    """$EDGELOOP_LABEL_STUDIO_BIN, else <repo>/.venv-labelstudio/bin/label-studio; None if neither exists."""
    path = Path(os.environ.get("EDGELOOP_LABEL_STUDIO_BIN") or REPO / ".venv-labelstudio" / "bin" / "label-studio")
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """`label-studio start` with a throw-away data folder, an admin user and a known API token."""

    username = "annotator@example.com"
    password = "edgeloop-test-password"

    def __init__(self, binary: Path, data_dir: Path) -> None:
        self.binary, self.data_dir = binary, data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)  # 40 hex characters, as a legacy token must be
        self.log = data_dir / "label-studio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 240.0) -> None:
        """Start and wait until /health answers; the first start migrates a new database (about 50 s)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            # 1.23 refuses legacy tokens unless told otherwise.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            # Offline and quiet: no version check against PyPI, no analytics.
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
        }
        cmd = [str(self.binary), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:  # a file, not a pipe: a full pipe would stall the server
            # Its own session, so stop() can end the server and anything it spawned, and nothing else.
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer /health within {timeout_s:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """End the server's process group (the server and whatever it started)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            return  # the group is gone already
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"
