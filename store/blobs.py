"""Content-addressed image storage: a blob's key is its sha256, so uploads are idempotent.

Keys fan out one level, blobs/ab/<sha>, as git's objects do: 256 folders, each of which holds
about 4,000 files per million images. A second level (blobs/ab/cd/) made a new folder for most
uploads into any store of under a few million images: a mkdir on the upload path.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from store.objects import ObjectStore

_SHA_RE = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, objects: ObjectStore, prefix: str = "blobs") -> None:
        self.objects = objects
        self.prefix = prefix

    def key(self, sha: str) -> str:
        if not _SHA_RE.fullmatch(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return f"{self.prefix}/{sha[:2]}/{sha}"

    def put(self, data: bytes) -> str:
        sha = sha256_hex(data)
        key = self.key(sha)
        # Same key, same bytes: a concurrent writer of the same blob can't do harm.
        if not self.objects.exists(key):
            self.objects.put(key, data)
        return sha

    def put_file(self, path: str | os.PathLike[str]) -> str:
        return self.put(Path(path).read_bytes())

    def get(self, sha: str) -> bytes:
        return self.objects.get(self.key(sha))

    def exists(self, sha: str) -> bool:
        return self.objects.exists(self.key(sha))

    def local_path(self, sha: str) -> Path | None:
        return self.objects.local_path(self.key(sha))
