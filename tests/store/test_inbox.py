"""The inbox and its load into the catalog: idempotent, crash-safe, safe to run twice at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import pytest

from store.inbox import Inbox, LoadReport, load_inbox
from store.objects import ObjectStore

TABLES = ("captures", "detections", "triggers", "heartbeats")


def _counts(catalog) -> dict[str, int]:
    with catalog.connect() as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_add_capture_refuses_duplicates_pending_or_loaded(catalog, inbox, make_capture):
    record = make_capture(1)
    assert not inbox.has_capture(record.id)
    assert inbox.add_capture(record) is True
    assert inbox.add_capture(record) is False
    assert inbox.has_capture(record.id)

    load_inbox(catalog, inbox)
    assert inbox.backlog() == {"captures": 0, "heartbeats": 0}
    assert inbox.has_capture(record.id)
    assert inbox.add_capture(record) is False
    assert inbox.backlog()["captures"] == 0


def test_add_upload_stores_blob_and_record_durably_and_refuses_duplicates(tmp_path, catalog, make_capture):
    inbox = Inbox(ObjectStore(tmp_path / "durable"))  # fsync on: the shared-flush path
    image = b"\xff\xd8 jpeg bytes"
    record = make_capture(1).model_copy(update={"sha256": hashlib.sha256(image).hexdigest()})
    assert asyncio.run(inbox.add_upload(record, image)) is True
    assert inbox.blobs.get(record.sha256) == image and inbox.has_capture(record.id)
    assert asyncio.run(inbox.add_upload(record, image)) is False  # pending already

    load_inbox(catalog, inbox)
    inbox.objects.delete(inbox.blobs.key(record.sha256))  # a crash lost the blob's name, say
    assert asyncio.run(inbox.add_upload(record, image)) is False  # loaded already...
    assert inbox.blobs.get(record.sha256) == image  # ...but the retry brought the blob back
    assert inbox.backlog() == {"captures": 0, "heartbeats": 0}


def test_load_writes_every_table(catalog, inbox, make_capture, make_heartbeat):
    # A device in another time zone, listing one reason twice.
    record = make_capture(1, triggers=["uncertainty", "flicker", "uncertainty"])
    local = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    record = record.model_copy(update={"meta": record.meta.model_copy(update={"captured_at": local})})
    inbox.add_capture(record)
    inbox.add_heartbeat(make_heartbeat(0))
    inbox.add_heartbeat(make_heartbeat(1))
    assert inbox.backlog() == {"captures": 1, "heartbeats": 2}

    report = load_inbox(catalog, inbox)

    assert report == LoadReport(captures_added=1, detections_added=2, triggers_added=2, heartbeats_added=2)
    with catalog.connect() as con:
        device, captured_at, size, frame = con.execute(
            "SELECT device, captured_at, bytes, source_frame FROM captures"
        ).fetchone()
        detections = con.execute("SELECT idx, class_id, class_name, x2 FROM detections ORDER BY idx").fetchall()
        triggers = con.execute("SELECT reason FROM triggers ORDER BY reason").fetchall()
        queue_depths = con.execute("SELECT queue_depth FROM heartbeats ORDER BY sent_at").fetchall()
    assert (device, size, frame) == ("jetson-1", 1001, 1)
    assert captured_at == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert detections == [(0, 0, "person", 50.0), (1, 3, None, 200.0)]
    assert triggers == [("flicker",), ("uncertainty",)]
    assert queue_depths == [(0,), (1,)]
    assert inbox.backlog() == {"captures": 0, "heartbeats": 0}
    assert len(inbox.objects.list("inbox/loaded/captures")) == 1


def test_second_run_adds_nothing(catalog, inbox, make_capture):
    for i in range(5):
        inbox.add_capture(make_capture(i))
    assert load_inbox(catalog, inbox).captures_added == 5
    assert load_inbox(catalog, inbox) == LoadReport()
    assert _counts(catalog)["captures"] == 5


def test_crash_after_commit_before_move_adds_nothing_twice(catalog, inbox, make_capture, make_heartbeat):
    for i in range(6):
        inbox.add_capture(make_capture(i))
    inbox.add_heartbeat(make_heartbeat(0))
    load_inbox(catalog, inbox)
    before = _counts(catalog)

    # The crash: rows committed, but the records never left pending.
    for key in inbox.objects.list("inbox/loaded"):
        inbox.objects.put(key.replace("inbox/loaded/", "inbox/"), inbox.objects.get(key))
    assert inbox.backlog() == {"captures": 6, "heartbeats": 1}

    report = load_inbox(catalog, inbox)
    assert report == LoadReport(already_present=7)
    assert _counts(catalog) == before
    assert inbox.backlog() == {"captures": 0, "heartbeats": 0}


def test_crash_between_batches_then_rerun_loads_the_rest_exactly(catalog, inbox, make_capture):
    for i in range(10):
        inbox.add_capture(make_capture(i))

    def crash(done: int, total: int) -> None:
        raise KeyboardInterrupt("killed after the first batch")

    with pytest.raises(KeyboardInterrupt):
        load_inbox(catalog, inbox, batch_size=4, progress=crash)
    assert _counts(catalog)["captures"] == 4
    assert inbox.backlog()["captures"] == 6

    calls: list[tuple[int, int]] = []
    report = load_inbox(catalog, inbox, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    assert report.captures_added == 6 and report.already_present == 0
    assert calls == [(4, 6), (6, 6)]
    assert _counts(catalog) == {"captures": 10, "detections": 20, "triggers": 10, "heartbeats": 0}


def test_unparseable_records_are_rejected_not_fatal(catalog, inbox, make_capture):
    inbox.add_capture(make_capture(1))
    inbox.objects.put("inbox/captures/garbage.json", b"{not json")
    inbox.objects.put("inbox/heartbeats/wrong.json", json.dumps({"id": "x", "heartbeat": {}}).encode())

    report = load_inbox(catalog, inbox)

    assert report.rejected == 2 and report.captures_added == 1
    assert inbox.objects.list("inbox/rejected") == [
        "inbox/rejected/captures/garbage.json",
        "inbox/rejected/heartbeats/wrong.json",
    ]
    assert inbox.backlog() == {"captures": 0, "heartbeats": 0}


def test_class_evidence_loads_as_floats_and_as_null_from_older_devices(catalog, inbox, make_capture):
    # What a device from before the field writes: the same meta without the key at all.
    old = make_capture(1)
    raw = json.loads(old.model_dump_json())
    del raw["meta"]["class_evidence"]
    inbox.objects.put(f"inbox/captures/{old.id}.json", json.dumps(raw).encode())
    assert load_inbox(catalog, inbox).captures_added == 1  # a batch where no capture has evidence

    new = make_capture(2)
    new = new.model_copy(update={"meta": new.meta.model_copy(update={"class_evidence": [0.9, 0.00812, 0.0, 1.0]})})
    inbox.add_capture(new)
    inbox.add_capture(make_capture(3))  # a batch mixing both
    assert load_inbox(catalog, inbox).captures_added == 2

    with catalog.connect() as con:
        stored = dict(con.execute("SELECT source_frame, class_evidence FROM captures").fetchall())
        column_type = con.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'captures' AND column_name = 'class_evidence'"
        ).fetchone()[0]
    assert column_type == "FLOAT[]"
    assert stored[1] is None and stored[3] is None
    assert stored[2] == pytest.approx([0.9, 0.00812, 0.0, 1.0], rel=1e-6)


LOADER = """
import asyncio
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from store.catalog import Catalog
from store.inbox import Inbox, load_inbox
from store.objects import ObjectStore

report = load_inbox(Catalog(Path(sys.argv[1])), Inbox(ObjectStore(sys.argv[2], fsync=False)), batch_size=20)
print(json.dumps(asdict(report)))
"""


def test_two_processes_loading_at_once_load_everything_exactly_once(
    catalog, inbox, make_capture, make_heartbeat, run_together
):
    for i in range(300):
        inbox.add_capture(make_capture(i, device=f"jetson-{i % 3}"))
    for i in range(100):
        inbox.add_heartbeat(make_heartbeat(i))

    argv = [str(catalog.path), inbox.objects.url]
    reports = [json.loads(out) for out in run_together(LOADER, [argv, argv])]

    total = {k: sum(r[k] for r in reports) for k in asdict(LoadReport())}
    assert total["captures_added"] == 300 and total["heartbeats_added"] == 100
    assert total["detections_added"] == 600 and total["triggers_added"] == 300
    assert total["rejected"] == 0
    assert _counts(catalog) == {"captures": 300, "detections": 600, "triggers": 300, "heartbeats": 100}
    assert inbox.backlog() == {"captures": 0, "heartbeats": 0}
    assert len(inbox.objects.list("inbox/loaded/captures")) == 300
