"""Writes that survive kill -9 and power loss: the bytes are on disk before a name points at them.

The spool, the model updater and the TensorRT engine cache all write through these three functions.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path` and fsync it; `exclusive` refuses a path that already exists."""
    with open(path, "xb" if exclusive else "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    # A rename or unlink is only durable once the directory itself is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename, so that a reader finds the old file or the whole new one.

    The temporary name carries the pid: two processes building the same engine never share one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_durably(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)
