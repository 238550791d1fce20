"""Fetching a published model onto the device: both blobs downloaded (resuming a cut link) and checked against
their sha256, then `models/<sha>/` made whole by one rename; and models no longer needed dropped from disk.

On disk (under the updater's `model_dir`): `downloads/<sha>.part` (resumable) and `models/<sha>/`
(model.onnx, reference.json, manifest.json: complete and verified).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from edge.client import IngestClient
from edge.detectors.metadata import file_sha256
from edge.durable import fsync_dir, write_atomically
from edge.protocol import ArtifactManifest, ReferenceSet
from edge.refusal import Refused


class ArtifactFetcher:
    """The artifacts in `model_dir`. `pace` runs between two MiB of a download (the updater waits for a
    gap between frames there)."""

    def __init__(self, model_dir: Path, pace: Callable[[], object]) -> None:
        self.models, self.downloads = model_dir / "models", model_dir / "downloads"
        for folder in (self.downloads, self.models):
            folder.mkdir(parents=True, exist_ok=True)
        self._pace = pace
        self.downloaded_bytes = 0  # over the network, since start: resumed downloads count only what was missing

    def folder(self, sha: str) -> Path:
        return self.models / sha

    def have(self, sha: str) -> bool:
        """Whether artifact `sha` is on disk and whole (downloaded before: a restart, or the way back after a
        rollback); a damaged copy is deleted, so that it is fetched again."""
        folder = self.folder(sha)
        if folder.is_dir():
            try:
                self.verified(sha)
            except (Refused, OSError, ValueError):
                shutil.rmtree(folder, ignore_errors=True)  # the disk's fault, not the artifact's: fetch it again
        return folder.is_dir()

    def verified(self, sha: str) -> ArtifactManifest:
        """The manifest of installed artifact `sha`, after checking its ONNX still hashes to it."""
        folder = self.folder(sha)
        manifest = ArtifactManifest.model_validate_json((folder / "manifest.json").read_bytes())
        if manifest.onnx_sha256 != sha or file_sha256(folder / "model.onnx") != sha:
            shutil.rmtree(folder, ignore_errors=True)
            raise Refused("its ONNX on disk no longer matches its sha256")
        return manifest

    def install(self, client: IngestClient, manifest: ArtifactManifest) -> None:
        """Download both blobs, check them, and make `models/<sha>/` appear whole with one rename."""
        sha = manifest.onnx_sha256
        reference = self._fetch(client, manifest.reference_sha256, manifest.reference_bytes, "reference set")
        try:
            ReferenceSet.model_validate_json(reference.read_bytes())
        except ValidationError as exc:
            reference.unlink()
            raise Refused(f"its reference set does not parse: {exc.error_count()} error(s)") from exc
        onnx = self._fetch(client, sha, manifest.onnx_bytes, "ONNX")
        staging = self.models / f".staging-{sha}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        os.replace(onnx, staging / "model.onnx")
        os.replace(reference, staging / "reference.json")
        write_atomically(staging / "manifest.json", manifest.model_dump_json().encode())
        fsync_dir(staging)
        os.replace(staging, self.folder(sha))
        fsync_dir(self.models)

    def _fetch(self, client: IngestClient, sha: str, size: int, what: str) -> Path:
        """Blob `sha` of `size` bytes, downloaded (resuming a part left by a cut link or a kill) and checked."""
        part = self.downloads / f"{sha}.part"
        for attempt in range(2):
            had = part.stat().st_size if part.exists() else 0
            try:
                got = client.download(sha, part, limit=size, pace=self._pace)
            finally:  # a cut link keeps what arrived: count it too
                self.downloaded_bytes += max(0, (part.stat().st_size if part.exists() else 0) - had)
            problem = None
            if got < size:
                problem = f"the {what} is truncated: {got} of {size} bytes"
            elif got > size:
                problem = f"the {what} is longer than the {size} bytes announced"
            elif file_sha256(part) != sha:
                problem = f"the {what}'s sha256 does not match"
            if problem is None:
                return part
            part.unlink(missing_ok=True)
            if attempt == 0 and had > 0 and got == size:
                continue  # a resumed part may end in bytes a power cut mangled: once more from zero
            raise Refused(problem)
        raise AssertionError("unreachable")

    def discard(self, sha: str) -> None:
        """A refused artifact will never run: free its space."""
        shutil.rmtree(self.folder(sha), ignore_errors=True)

    def collect_garbage(self, keep: set[str | None]) -> None:
        """Keep the models in `keep` (the running one and the way back); drop older ones and stale parts."""
        for folder in self.models.iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        for part in self.downloads.iterdir():
            part.unlink(missing_ok=True)
