"""Uploaders a test starts against one ingest URL (the stand-in server or the real API), built the same way for
both: short backoff, and a client factory that re-reads the token as a device re-reads its config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.client import IngestClient
from edge.spool import Spool
from edge.uploader import Uploader


@pytest.fixture(name="spool")
def spool_fixture(tmp_path: Path) -> Iterator[Spool]:
    """The `spool` fixture of a module that imports this (named apart, so that the tests' argument does not
    shadow the import)."""
    with Spool(tmp_path / "spool") as s:
        yield s


class Uploaders:
    """Starts uploaders on `spool` towards `url` and keeps them in `started`, for the fixture to stop at the end."""

    def __init__(self, spool: Spool, url: str, timeout_s: float) -> None:
        self.spool, self.url, self.timeout_s = spool, url, timeout_s
        self.started: list[Uploader] = []

    def start(self, token: list[str], **kwargs: object) -> Uploader:
        """An uploader whose client factory reads `token[0]`, as a device re-reads its config."""
        kwargs = {"backoff_base_s": 0.05, "backoff_max_s": 0.3, **kwargs}
        uploader = Uploader(self.spool, lambda: IngestClient(self.url, token[0], timeout_s=self.timeout_s),
                            **kwargs)  # type: ignore[arg-type]
        uploader.start()
        self.started.append(uploader)
        return uploader
