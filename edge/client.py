"""HTTP client for the ingest API, shared by the agent's uploader and `edgeloop upload`.

It sorts every failure into "retry later" (network, 429, 5xx) or "never retry" (other 4xx).
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx

from edge.protocol import API_PREFIX, CAPTURES_PATH, HEARTBEAT_PATH, CaptureAccepted, CaptureMeta, Heartbeat, utc_now


class UploadRejected(Exception):
    """The server refused the request for good (4xx other than 408/429): do not retry."""

    def __init__(self, status: int, reason: str, detail: object) -> None:
        super().__init__(f"HTTP {status} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


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

    def _send(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 400:
            return response
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}", retry_after_s(response))
        try:
            body = response.json()
            reason, detail = body.get("reason", "rejected"), body.get("detail", body)
        except ValueError:
            reason, detail = "rejected", response.text[:500]
        raise UploadRejected(response.status_code, reason, detail)
