"""BlobStore: content addressing, fan-out keys and skipped rewrites, on a real folder."""

from __future__ import annotations

import hashlib

import pytest

from store.blobs import BlobStore, sha256_hex


def test_put_get_by_sha(objects):
    blobs = BlobStore(objects)
    sha = blobs.put(b"jpeg bytes")
    assert sha == hashlib.sha256(b"jpeg bytes").hexdigest() == sha256_hex(b"jpeg bytes")
    assert blobs.key(sha) == f"blobs/{sha[:2]}/{sha}"
    assert blobs.get(sha) == b"jpeg bytes"
    assert blobs.exists(sha)
    assert blobs.local_path(sha).read_bytes() == b"jpeg bytes"
    assert not blobs.exists(sha256_hex(b"other"))


def test_second_put_of_same_bytes_does_not_rewrite(objects):
    blobs = BlobStore(objects)
    sha = blobs.put(b"same")
    before = blobs.local_path(sha).stat()
    assert blobs.put(b"same") == sha
    after = blobs.local_path(sha).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert objects.list("blobs") == [blobs.key(sha)]


def test_put_file(objects, tmp_path):
    image = tmp_path / "frame.png"
    image.write_bytes(b"\x89PNG fake")
    blobs = BlobStore(objects, prefix="images")
    sha = blobs.put_file(image)
    assert objects.list() == [f"images/{sha[:2]}/{sha}"]


@pytest.mark.parametrize("sha", ["", "abc", "A" * 64, "g" * 64, "a" * 65, "../" + "a" * 61])
def test_bad_sha_is_rejected(objects, sha):
    with pytest.raises(ValueError, match="sha256"):
        BlobStore(objects).get(sha)
