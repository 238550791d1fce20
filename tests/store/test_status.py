"""status_counts over a real catalog and inbox."""

from __future__ import annotations

import json

from store.devices import add_device
from store.inbox import load_inbox
from store.status import status_counts


def test_status_counts(catalog, inbox, objects, make_capture, make_heartbeat):
    add_device(catalog, objects, "jetson-1")
    inbox.add_capture(make_capture(0, device="jetson-1", triggers=["uncertainty", "random"]))
    inbox.add_capture(make_capture(1, device="jetson-2"))
    inbox.add_heartbeat(make_heartbeat(0))
    inbox.add_heartbeat(make_heartbeat(5))
    load_inbox(catalog, inbox)
    inbox.add_capture(make_capture(2))  # still waiting

    status = status_counts(catalog, inbox)

    assert status["captures_by_device"] == {"jetson-1": 1, "jetson-2": 1}
    assert status["captures_by_trigger"] == {"random": 1, "uncertainty": 2}
    assert status["detections_by_class"] == {"3": 2, "person": 2}  # class 3 has no name
    assert status["heartbeats_by_device"] == {"jetson-1": {"count": 2, "latest": "2026-01-01T00:05:00+00:00"}}
    assert status["totals"] == {"devices": 1, "captures": 2, "detections": 4, "heartbeats": 2}
    assert status["inbox_backlog"] == {"captures": 1, "heartbeats": 0}
    assert json.loads(json.dumps(status)) == status
