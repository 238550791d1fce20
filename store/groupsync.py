"""Group commit: many concurrent writers made durable by one filesystem flush.

Fsyncing every file and folder of an upload costs four flushes to the disk and a thread
for each upload to wait in. Instead, uploads write their files without syncing and await
here: one thread calls syncfs(2) for everyone who arrived before the flush began.
Under load one flush covers a whole batch of uploads.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path


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


class GroupFlush:
    """`await flushed()` returns once a flush that began after the call has finished.

    Every write a coroutine made before awaiting is therefore on disk when it returns. One
    thread runs the flushes, each for everyone waiting when it starts, so the event loop
    never blocks on the disk and concurrent uploads share the cost. A failed flush raises
    in every waiter it covered: none acknowledges lost data.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    async def flushed(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting.append((loop, future))
            first = len(self._waiting) == 1
            if self._thread is None:
                # Started on first use, so that forked server workers each get their own.
                self._thread = threading.Thread(target=self._run, name="edgeloop-flush", daemon=True)
                self._thread.start()
        if first:  # later arrivals join a batch the flusher already knows of, or will take next
            self._wake.set()
        await future

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                batch, self._waiting = self._waiting, []
            if not batch:
                continue
            error: BaseException | None = None
            try:
                self._flush()
            except BaseException as exc:  # handed to every waiter of the batch
                error = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for loop, future in batch:
                by_loop.setdefault(loop, []).append(future)
            for loop, futures in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, futures, error)
                except RuntimeError:
                    pass  # that loop has closed: nobody is waiting any more


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # cancelled: the client went away
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
