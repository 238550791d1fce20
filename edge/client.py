"""HTTP client for the ingest API, shared by the agent's uploader and `edgeloop upload`.

It sorts every failure into "retry later" (network, 429, 5xx) or "never retry" (other 4xx).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from edge.protocol import (
    API_PREFIX,
    ARTIFACTS_PATH,
    CAPTURES_PATH,
    CREDENTIAL_REASONS,
    DEPLOYMENT_PATH,
    HEARTBEAT_PATH,
    CaptureAccepted,
    CaptureMeta,
    DeploymentAnswer,
    Heartbeat,
    utc_now,
)


class UploadRejected(Exception):
    """The server refused the request for good (4xx other than 408/429): do not retry."""

    def __init__(self, status: int, reason: str, detail: object) -> None:
        super().__init__(f"HTTP {status} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


def refuses_device(exc: UploadRejected) -> bool:
    """The server refused the device (its token, or an address with no ingest API behind it), not what it
    sent: every request will be refused alike, so nothing sent should be set aside for it."""
    # 404: the capture and heartbeat routes always exist on the API; a 404 means the URL has a wrong path.
    return exc.status in (401, 404) or exc.reason in CREDENTIAL_REASONS


def refusal_hint(exc: UploadRejected, server: str) -> str:
    """One line for the person at the terminal: what the refusal means and what to change."""
    if exc.status == 404:
        return (f"--server {server}: no edgeloop ingest API answers there (HTTP 404); the server URL should be "
                "http://HOST:PORT, without a path")
    if exc.reason == "revoked_token":
        return (f"the server at {server} refused the device token: it was revoked (HTTP 403); issue a new one with "
                "`edgeloop devices rotate NAME` on the control plane")
    if exc.reason == "device_mismatch":
        return (f"the server at {server} refused the uploads (HTTP 403): {exc.detail}; pass the token's device "
                "name with --device, or that device's token with --token")
    return (f"the server at {server} refused the device token (HTTP {exc.status} {exc.reason}): check --token "
            "(or EDGELOOP_TOKEN); `edgeloop devices add NAME` on the control plane prints a new device's token")


class TransientError(Exception):
    """Worth retrying: network trouble, 408, 429 or 5xx; `retry_after` is the server's hint."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_s(response: httpx.Response) -> float | None:
    """The server's Retry-After hint in seconds (either form), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:  # the HTTP-date form
            return max(0.0, (parsedate_to_datetime(value) - utc_now()).total_seconds())
        except (TypeError, ValueError):
            return None


class IngestClient:
    """One device's connection to the ingest API (keeps its HTTP connection alive)."""

    def __init__(self, server: str, token: str, *, timeout_s: float = 15.0) -> None:
        self._http = httpx.Client(
            base_url=server.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def upload_capture(self, meta: CaptureMeta | bytes, image: bytes, media_type: str) -> CaptureAccepted:
        """POST one capture; `meta` may be pre-serialised JSON (as the spool stores it)."""
        meta_json = meta if isinstance(meta, bytes) else meta.model_dump_json().encode()
        files = {
            "meta": ("meta.json", meta_json, "application/json"),
            "image": ("image", image, media_type),
        }
        response = self._send("POST", CAPTURES_PATH, files=files)
        return CaptureAccepted.model_validate_json(response.content)

    def whoami(self) -> str:
        """The device name the token belongs to."""
        return str(self._send("GET", f"{API_PREFIX}/whoami").json()["device"])

    def heartbeat(self, heartbeat: Heartbeat) -> None:
        self._send(
            "POST",
            HEARTBEAT_PATH,
            content=heartbeat.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    def deployment(self, etag: str | None = None) -> tuple[DeploymentAnswer | None, str | None]:
        """What this device should run, and the answer's ETag; (None, etag) when unchanged since `etag`."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._send("GET", DEPLOYMENT_PATH, headers=headers)
        if response.status_code == 304:
            return None, etag
        return DeploymentAnswer.model_validate_json(response.content), response.headers.get("etag")

    def download(self, sha256: str, dest: Path, *, limit: int, pace: Callable[[], object] = lambda: None) -> int:
        """Fetch artifact `sha256` into `dest`, resuming after the bytes already there (Range); returns the
        size of `dest`. Stops reading past `limit` bytes: more than the manifest announced is refused anyway.
        A broken connection raises TransientError and keeps what arrived, for the next try to resume.
        `pace` runs before the request and after each MiB (the updater waits there for a gap between frames)."""
        have = dest.stat().st_size if dest.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            pace()
            with self._http.stream("GET", f"{ARTIFACTS_PATH}/{sha256}", headers=headers) as response:
                if response.status_code == 416:  # what we have is already longer than the blob
                    return have
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                # 206: the rest of the bytes; 200: the server sent it all again, from the start.
                mode = "ab" if response.status_code == 206 else "wb"
                with open(dest, mode) as f:
                    size = have if mode == "ab" else 0
                    paced = size
                    for chunk in response.iter_bytes():  # as it arrives: a cut loses nothing received
                        f.write(chunk)
                        size += len(chunk)
                        if size > limit:
                            break
                        if size - paced >= 1 << 20:
                            paced = size
                            pace()
                    f.flush()
                    os.fsync(f.fileno())  # the next try resumes after these bytes, even after a power cut
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        return dest.stat().st_size

    def _send(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 400:
            return response
        self._raise_for(response)

    @staticmethod
    def _raise_for(response: httpx.Response) -> typing.NoReturn:
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}", retry_after_s(response))
        try:
            body = response.json()
            reason, detail = body.get("reason", "rejected"), body.get("detail", body)
        except ValueError:
            reason, detail = "rejected", response.text[:500]
        raise UploadRejected(response.status_code, reason, detail)
