"""A small tmpfs mounted for one test: a disk that really fills up and answers ENOSPC, as an SD card does.

Mounting needs root (CAP_SYS_ADMIN); where it is refused the test is skipped with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """`path`, created and mounted as a tmpfs of `size` until the block ends (then unmounted)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs at {path} (needs root): {mount.stderr.strip() or mount.returncode}")
    try:
        yield path
    finally:
        # Lazily if a file is still open there (a failed test's spool): the mount must never outlive the test.
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
