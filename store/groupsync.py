"""Group commit: many concurrent writers made durable by one filesystem flush.

Fsyncing every file and folder of an upload costs four flushes to the disk and a thread
for each upload to wait in. Instead, uploads write their files without syncing and await
here once: one thread calls syncfs(2) for everyone who arrived before the flush began,
publishes their files, and flushes again. Under load each flush covers a batch of uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not Linux
        return None


_SYNCFS = _load_syncfs()


def flush_filesystem(path: Path) -> None:
    """Flush every dirty file, folder and rename of the filesystem holding `path` to disk.

    syncfs(2) on Linux; elsewhere sync(2), which flushes every filesystem.
    """
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass(eq=False)
class _Commit:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    publish: Callable[[], Any]
    discard: Callable[[], None]
    result: Any = None
    error: BaseException | None = None


class GroupFlush:
    """Group commit of writes made from event loops, by one flusher thread.

    `await commit(publish, discard)`: the flusher flushes the filesystem, so whatever the
    caller wrote before awaiting is on disk; then runs `publish()` (which makes the writes
    visible, e.g. renames temp files into place) and flushes once more, so that is on disk
    too; then returns publish()'s result. Each flush covers every caller waiting when it
    begins, so concurrent uploads share them, the event loop never blocks on the disk, and
    an upload awaits once. If the first flush fails, `discard()` runs instead of `publish()`
    and the error is raised: no caller acknowledges data that may be lost. Both run even if
    the awaiting task has gone away.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._waiting: list[_Commit] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    async def commit(self, publish: Callable[[], T], discard: Callable[[], None]) -> T:
        loop = asyncio.get_running_loop()
        commit = _Commit(loop, loop.create_future(), publish, discard)
        with self._lock:
            self._waiting.append(commit)
            first = len(self._waiting) == 1
            if self._thread is None:
                # Started on first use, so that forked server workers each get their own.
                self._thread = threading.Thread(target=self._run, name="edgeloop-flush", daemon=True)
                self._thread.start()
        if first:  # later arrivals join a batch the flusher already knows of, or will take next
            self._wake.set()
        return await commit.future  # type: ignore[no-any-return]

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                batch, self._waiting = self._waiting, []
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Commit]) -> None:
        try:
            self._flush()
        except BaseException as exc:
            for commit in batch:
                commit.error = exc
                with contextlib.suppress(Exception):
                    commit.discard()
        else:
            for commit in batch:
                try:
                    commit.result = commit.publish()
                except BaseException as exc:  # that caller's alone
                    commit.error = exc
            try:
                self._flush()
            except BaseException as exc:  # published, but maybe not durable: nobody may acknowledge
                for commit in batch:
                    commit.error = commit.error or exc
        by_loop: dict[asyncio.AbstractEventLoop, list[_Commit]] = {}
        for commit in batch:
            by_loop.setdefault(commit.loop, []).append(commit)
        for loop, commits in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, commits)


def _settle(commits: list[_Commit]) -> None:
    for commit in commits:
        if commit.future.done():  # cancelled: the client went away
            continue
        if commit.error is None:
            commit.future.set_result(commit.result)
        else:
            commit.future.set_exception(commit.error)
