"""Bytes under string keys, on a local folder or any fsspec store (gs://, s3://, memory://).

Writes are atomic, so a reader never sees half an object and a crash never leaves one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from store.groupsync import GroupFlush, flush_filesystem

# Temp files live beside their target (so os.replace stays on one filesystem) under this
# prefix; keys may not use it, so list() can skip temp files without ambiguity.
TMP_PREFIX = ".tmp-"
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")


def validate_key(key: str) -> str:
    """Return `key` if it is a relative '/'-separated path that cannot escape the root."""
    parts = key.split("/")
    if not _KEY_CHARS.fullmatch(key) or any(p in ("", ".", "..") or p.startswith(TMP_PREFIX) for p in parts):
        raise ValueError(f"invalid object key {key!r}: use relative 'a/b/c' paths of [A-Za-z0-9._-]")
    return key


@dataclass(frozen=True)
class Put:
    """One write for `ObjectStore.put_shared`; `if_absent`: only create, never replace."""

    key: str
    data: bytes
    if_absent: bool = False


class ObjectStore:
    """A flat key space under one root URL; `fsync=False` trades durability for speed everywhere.

    Every write is durable when it returns: `put` fsyncs the file and its folder, `put_shared`
    (for servers) shares syncfs(2) calls with concurrent writers instead.
    """

    def __init__(self, url: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.url = str(url)
        self.fsync = fsync
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self._root = root.rstrip("/")
        # The local case skips fsspec so that writes can be fsynced, linked and renamed.
        self._local = Path(root) if isinstance(self.fs, LocalFileSystem) else None
        local = self._local
        self._group = GroupFlush(lambda: flush_filesystem(local)) if local and fsync else None

    def local_path(self, key: str) -> Path | None:
        return self._local / validate_key(key) if self._local else None

    def _path(self, key: str) -> str:
        # A plain string: pathlib's overhead showed up in the ingest server's profile.
        assert self._local is not None, "only local stores have paths"
        return os.path.join(self._local, validate_key(key))

    def put(self, key: str, data: bytes, *, fsync: bool = True) -> None:
        path = self.local_path(key)
        if path is None:
            self.fs.pipe_file(self._remote(key), data)  # one object PUT is atomic and durable
            return
        _publish(self._write_temp(path, data, fsync), path, if_absent=False)
        if fsync and self.fsync:
            _fsync_dir(path.parent)  # makes the rename itself durable

    async def put_shared(self, *puts: Put) -> list[bool]:
        """Write `puts` durably from an event loop, for a server under load: rather than
        fsyncs of their own, they share flushes with concurrent callers (group commit).

        Every byte reaches the disk before any name appears, so a crash never leaves a name
        pointing at lost data; the names then appear in order and are flushed once more.
        Returns, per put, whether it wrote its key (False: `if_absent` and the key existed).
        With no puts it still waits for a flush: whatever the caller saw is then durable.
        """
        if self._group is None:  # remote, or fsync off: plain writes, off the event loop
            return await asyncio.to_thread(lambda: [self._put_now(p) for p in puts])
        paths = [self._path(p.key) for p in puts]
        temps: list[str] = []

        def discard() -> None:  # the source of each link, or every temp if nothing was published
            for tmp in temps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

        def publish() -> list[bool]:  # once the bytes are on disk
            try:
                return [_publish(tmp, path, put.if_absent) for put, path, tmp in zip(puts, paths, temps)]
            except BaseException:
                discard()
                raise

        try:
            for path, put in zip(paths, puts):
                temps.append(self._write_temp(path, put.data, fsync=False))
        except BaseException:
            discard()
            raise
        return await self._group.commit(publish, discard)

    def _put_now(self, put: Put) -> bool:
        if put.if_absent:
            return self.put_if_absent(put.key, put.data)
        self.put(put.key, put.data)
        return True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` unless it exists; True if this call created it."""
        path = self.local_path(key)
        if path is None:
            # Object stores have no portable create-if-absent; a rare race ends in an
            # overwrite, which callers make harmless by writing idempotent content.
            if self.fs.exists(self._remote(key)):
                return False
            self.put(key, data)
            return True
        if not _publish(self._write_temp(path, data, fsync=True), path, if_absent=True):
            return False
        if self.fsync:
            _fsync_dir(path.parent)
        return True

    def get(self, key: str) -> bytes:
        path = self.local_path(key)
        try:
            return path.read_bytes() if path else self.fs.cat_file(self._remote(key))
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(f"no object {key!r} in {self.url}") from None

    def open(self, key: str) -> BinaryIO:
        """`key` opened for reading, seekable; a remote store fetches only the ranges read, never the whole."""
        path = self.local_path(key)
        try:
            return path.open("rb") if path else self.fs.open(self._remote(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key)) if self._local else self.fs.isfile(self._remote(key))

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error, so cleanups can be repeated."""
        path = self.local_path(key)
        if path:
            path.unlink(missing_ok=True)
        elif self.fs.exists(self._remote(key)):
            self.fs.rm_file(self._remote(key))

    def move(self, src: str, dst: str) -> None:
        """Rename `src` to `dst`, replacing `dst`; KeyError if `src` is gone."""
        src_path, dst_path = self.local_path(src), self.local_path(dst)
        try:
            if src_path and dst_path:
                dst_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src_path, dst_path)
            else:
                self.fs.copy(self._remote(src), self._remote(dst))
                self.fs.rm_file(self._remote(src))
        except FileNotFoundError:
            raise KeyError(f"no object {src!r} in {self.url}") from None

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of all objects under the folder `prefix` ('' for everything)."""
        prefix = validate_key(prefix.rstrip("/")) if prefix.strip("/") else ""
        if self._local:
            top = self._local / prefix
            found = [Path(d, f) for d, _, files in os.walk(top) for f in files]
            keys = [p.relative_to(self._local).as_posix() for p in found]
        else:
            base = self._remote(prefix) if prefix else self._root
            found = self.fs.find(base) if self.fs.exists(base) else []
            keys = [p[len(self._root) :].lstrip("/") for p in found]
        return sorted(k for k in keys if not any(p.startswith(TMP_PREFIX) for p in k.split("/")))

    def _remote(self, key: str) -> str:
        key = validate_key(key)
        return f"{self._root}/{key}" if self._root else key

    def _write_temp(self, path: str | Path, data: bytes, fsync: bool) -> str:
        fsync = fsync and self.fsync
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # first object in this folder: make it (rare, so not checked up front)
            _make_dirs(Path(folder), durable=fsync)  # without fsync, the caller's group flush covers them
            fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp


def _publish(tmp: str, path: str | Path, if_absent: bool) -> bool:
    """Give the temp file `tmp` its name `path`; False if `if_absent` and `path` exists."""
    if not if_absent:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # fails if the target exists: exactly one writer wins
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _make_dirs(path: Path, durable: bool) -> None:
    """mkdir -p; with `durable`, each new folder's entry in its parent is fsynced too."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # a concurrent writer made it
        if durable:
            _fsync_dir(folder.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
