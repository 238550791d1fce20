"""The device's trust in what it installs (DESIGN decision 10): TUF metadata checked against a pinned root.

Before a model is installed its ONNX must be a target the fleet's targets key signed (hashes, length) and the
signed assignment must name this device; unsigned, badly signed, expired or rolled-back metadata is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater

TUF_PATH = "/v1/tuf/"  # where the ingest API serves the repository's metadata files
_SALT = b"edgeloop-canary\0"  # fixed: the control plane buckets devices with the same salt (desired.py)


class TrustError(Exception):
    """Why an artifact was refused; the running model keeps running and the heartbeat says this."""


def model_target(model_version: str) -> str:
    """The TUF target path naming a model's ONNX."""
    return f"models/{model_version}.onnx"


def canary_bucket(device: str) -> float:
    """Where `device` stands in [0, 100): in a canary of PCT percent when below PCT. A stable hash of the name,
    shared with the control plane, so that both sides agree on who is in a canary."""
    digest = hashlib.sha256(_SALT + device.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def assigned(device: str, custom: Mapping[str, Any]) -> bool:
    """Whether a signed target's assignment (its `custom` fields) lets `device` run it: pinned to it, the fleet's
    model, or the rollout's while the device is in its canary."""
    if device in custom.get("pinned", ()):
        return True
    if device in custom.get("excluded", ()):  # held on another model by a pin
        return False
    canary = custom.get("canary_pct")
    return bool(custom.get("fleet")) or (canary is not None and canary_bucket(device) < float(canary))


def is_tuf_root(path: Path) -> bool:
    """Whether `path` holds TUF root metadata (checked at start-up, so a wrong file is named at once)."""
    try:
        return json.loads(path.read_bytes())["signed"]["_type"] == "root"
    except (OSError, ValueError, KeyError, TypeError):
        return False


class _Fetcher(FetcherInterface):
    """TUF's downloads over the device's own httpx client (its token, its timeouts)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            raise tuf_errors.DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        return iter([response.content])


@dataclass
class TrustedInstaller:
    """Checks each artifact against TUF metadata fetched from the server, trusting only `root` (pinned at install).

    `metadata_dir` keeps the newest metadata seen, so an older (replayed) version is refused on every later
    check, across restarts."""

    root: Path
    metadata_dir: Path
    server: str
    token: str
    device: str
    timeout_s: float = 10.0

    def check(self, model_version: str, onnx: bytes) -> None:
        """Raise TrustError unless `onnx` is the signed target for `model_version` and assigned to this device."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(headers=headers, timeout=self.timeout_s) as client:
            try:
                updater = Updater(str(self.metadata_dir), self.server.rstrip("/") + TUF_PATH,
                                  fetcher=_Fetcher(client), bootstrap=self.root.read_bytes())
                updater.refresh()
                info = updater.get_targetinfo(model_target(model_version))
            except tuf_errors.ExpiredMetadataError as exc:
                raise TrustError(f"signed metadata has expired ({exc})") from exc
            except tuf_errors.UnsignedMetadataError as exc:
                raise TrustError(f"metadata not signed by the fleet's keys ({exc})") from exc
            except tuf_errors.BadVersionNumberError as exc:
                raise TrustError(f"metadata older than already seen: a rollback ({exc})") from exc
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
                raise TrustError(f"signed metadata could not be verified ({type(exc).__name__}: {exc})") from exc
        if info is None:
            raise TrustError(f"{model_version} is not a signed target")
        try:
            info.verify_length_and_hashes(onnx)
        except tuf_errors.LengthOrHashMismatchError as exc:
            raise TrustError(f"{model_version}: the ONNX is not the one signed ({exc})") from exc
        if not assigned(self.device, info.custom):
            raise TrustError(f"{model_version} is signed, but not assigned to {self.device}")
