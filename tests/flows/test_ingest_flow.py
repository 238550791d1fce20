"""The Prefect `ingest` flow runs for real (ephemeral Prefect API) and loads the inbox once."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge.protocol import CaptureMeta, SourceRef, utc_now
from flows.ingest import ingest_flow
from store.inbox import CaptureRecord
from store.settings import Settings, Workspace


pytestmark = pytest.mark.usefixtures("prefect_api")


def test_ingest_flow_loads_then_adds_nothing(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path))
    for i in range(5):
        meta = CaptureMeta(device="cam", camera="c", captured_at=utc_now(), frame_width=8, frame_height=8,
                           model_version="m", triggers=["random"], source=SourceRef(uri=f"f{i}"))
        sha = f"{i + 1:064x}"
        ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=1, meta=meta))
    assert ingest_flow(str(tmp_path))["captures_added"] == 5
    assert ingest_flow(str(tmp_path))["captures_added"] == 0
    assert ws.inbox.backlog()["captures"] == 0
