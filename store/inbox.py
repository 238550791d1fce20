"""The inbox: JSON records the stateless API writes, and the bulk, idempotent load into the catalog.

A record moves pending → loaded only after its batch has committed, so a crash loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated
from uuid import uuid4

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from edge.protocol import CaptureMeta, Heartbeat, Name, utc_now
from store.blobs import BlobStore
from store.catalog import Catalog
from store.objects import ObjectStore, Put

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptureRecord(_Record):
    id: Name  # becomes a file name, so it must be a safe one
    sha256: Sha256
    received_at: AwareDatetime = Field(default_factory=utc_now)
    media_type: str
    bytes: int = Field(ge=0)
    meta: CaptureMeta


class HeartbeatRecord(_Record):
    id: Name = Field(default_factory=lambda: uuid4().hex)
    received_at: AwareDatetime = Field(default_factory=utc_now)
    heartbeat: Heartbeat


# Folders under the store root; `loaded/` and `rejected/` mirror the pending layout.
CAPTURES = "inbox/captures"
HEARTBEATS = "inbox/heartbeats"


def _loaded(key: str) -> str:
    return key.replace("inbox/", "inbox/loaded/", 1)


def _rejected(key: str) -> str:
    return key.replace("inbox/", "inbox/rejected/", 1)


class Inbox:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.blobs = BlobStore(objects)

    def add_capture(self, record: CaptureRecord) -> bool:
        """Queue a capture; False when one with this id is already pending or loaded."""
        key = f"{CAPTURES}/{record.id}.json"
        # Between these two steps the loader may move an earlier copy to loaded/; the
        # second copy then loads as a no-op (ON CONFLICT), so the race is harmless.
        if self.objects.exists(_loaded(key)):
            return False
        return self.objects.put_if_absent(key, record.model_dump_json().encode())

    async def add_upload(self, record: CaptureRecord, image: bytes) -> bool:
        """Store an upload, its image blob and its record, from the API's event loop; durable
        on return, flushed together with concurrent uploads (ObjectStore.put_shared).
        False when a capture with this id is already pending or loaded."""
        key = f"{CAPTURES}/{record.id}.json"
        blob_key = self.blobs.key(record.sha256)
        # Same key, same bytes: a blob already there (another device, a retry) is not written again.
        puts = [] if self.objects.exists(blob_key) else [Put(blob_key, image)]
        known = self.objects.exists(_loaded(key))
        if not known:
            puts.append(Put(key, record.model_dump_json().encode(), if_absent=True))
        # Blob before record. A crash before this returns may keep the record yet lose the blob's
        # name, on filesystems that don't order metadata writes. The device was not answered, so
        # it retries, and the blob is written again even though the capture is known.
        # With nothing to write, put_shared still flushes: what we found may be a concurrent
        # upload's, not yet on disk, and a 200 must not be answered before it is.
        written = await self.objects.put_shared(*puts)
        return not known and written[-1]

    def has_capture(self, id: str) -> bool:
        key = f"{CAPTURES}/{id}.json"
        return self.objects.exists(key) or self.objects.exists(_loaded(key))

    def add_heartbeat(self, record: HeartbeatRecord) -> None:
        self.objects.put(f"{HEARTBEATS}/{record.id}.json", record.model_dump_json().encode())

    async def add_heartbeat_shared(self, record: HeartbeatRecord) -> None:
        """`add_heartbeat` from the API's event loop (see ObjectStore.put_shared)."""
        await self.objects.put_shared(Put(f"{HEARTBEATS}/{record.id}.json", record.model_dump_json().encode()))

    def backlog(self) -> dict[str, int]:
        return {"captures": len(self.objects.list(CAPTURES)), "heartbeats": len(self.objects.list(HEARTBEATS))}


@dataclass
class LoadReport:
    captures_added: int = 0
    detections_added: int = 0
    triggers_added: int = 0
    heartbeats_added: int = 0
    already_present: int = 0  # records whose rows were in the catalog already
    rejected: int = 0  # records that did not parse, moved to inbox/rejected/


def load_inbox(
    catalog: Catalog,
    inbox: Inbox,
    *,
    batch_size: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> LoadReport:
    """Load every pending record into the catalog; safe to re-run, and to run concurrently."""
    report = LoadReport()
    pending = inbox.objects.list(CAPTURES) + inbox.objects.list(HEARTBEATS)
    for start in range(0, len(pending), batch_size):
        keys = pending[start : start + batch_size]
        captures, heartbeats = _read(inbox.objects, keys, report)
        _insert(catalog, captures, heartbeats, report)
        # Only now, with the batch committed, do records leave pending.
        for key in [*captures, *heartbeats]:
            try:
                inbox.objects.move(key, _loaded(key))
            except KeyError:
                pass  # another loader moved it first
        if progress:
            progress(start + len(keys), len(pending))
    return report


def _read(
    objects: ObjectStore, keys: list[str], report: LoadReport
) -> tuple[dict[str, CaptureRecord], dict[str, HeartbeatRecord]]:
    captures: dict[str, CaptureRecord] = {}
    heartbeats: dict[str, HeartbeatRecord] = {}
    for key in keys:
        try:
            raw = objects.get(key)
        except KeyError:
            continue  # another loader got here first
        try:
            if key.startswith(CAPTURES):
                captures[key] = CaptureRecord.model_validate_json(raw)
            else:
                heartbeats[key] = HeartbeatRecord.model_validate_json(raw)
        except ValidationError:
            try:
                objects.move(key, _rejected(key))
                report.rejected += 1
            except KeyError:
                pass
    return captures, heartbeats


def _insert(
    catalog: Catalog, captures: dict[str, CaptureRecord], heartbeats: dict[str, HeartbeatRecord], report: LoadReport
) -> None:
    now = utc_now()
    tables = {
        "captures": [_capture_row(r, now) for r in captures.values()],
        "detections": [row for r in captures.values() for row in _detection_rows(r)],
        # A device may list a reason twice; the key (capture_id, reason) may not.
        "triggers": [
            {"capture_id": r.id, "reason": t} for r in captures.values() for t in dict.fromkeys(r.meta.triggers)
        ],
        "heartbeats": [_heartbeat_row(r) for r in heartbeats.values()],
    }
    added = dict.fromkeys(tables, 0)
    with catalog.connect() as con:
        con.begin()  # the whole batch, all four tables, or nothing
        for table, rows in tables.items():
            if rows:
                # One bulk INSERT per table; rows already there (an earlier or concurrent
                # load) are skipped, so the count returned is what was really new.
                con.register("batch", pa.Table.from_pylist(rows))
                sql = f"INSERT INTO {table} BY NAME SELECT * FROM batch ON CONFLICT DO NOTHING"
                added[table] = con.execute(sql).fetchone()[0]
                con.unregister("batch")
        con.commit()
    report.captures_added += added["captures"]
    report.detections_added += added["detections"]
    report.triggers_added += added["triggers"]
    report.heartbeats_added += added["heartbeats"]
    report.already_present += len(captures) - added["captures"] + len(heartbeats) - added["heartbeats"]


def _capture_row(r: CaptureRecord, loaded_at: datetime) -> dict[str, object]:
    m = r.meta
    return {
        "id": r.id, "sha256": r.sha256, "device": m.device, "camera": m.camera,
        "captured_at": _utc(m.captured_at), "received_at": _utc(r.received_at),
        "frame_width": m.frame_width, "frame_height": m.frame_height, "media_type": r.media_type,
        "bytes": r.bytes, "model_version": m.model_version, "source_uri": m.source.uri,
        "source_frame": m.source.frame_index, "source_ts": m.source.timestamp_s, "note": m.note,
        "class_evidence": m.class_evidence, "update_state": m.update_state, "loaded_at": loaded_at,
    }


def _detection_rows(r: CaptureRecord) -> list[dict[str, object]]:
    return [
        {"capture_id": r.id, "idx": i, "class_id": d.class_id, "class_name": d.class_name, "confidence": d.confidence,
         "x1": d.xyxy[0], "y1": d.xyxy[1], "x2": d.xyxy[2], "y2": d.xyxy[3]}
        for i, d in enumerate(r.meta.detections)
    ]


def _heartbeat_row(r: HeartbeatRecord) -> dict[str, object]:
    hb = r.heartbeat.model_dump(exclude={"schema_version"})
    return {**hb, "id": r.id, "received_at": _utc(r.received_at), "sent_at": _utc(r.heartbeat.sent_at)}


def _utc(t: datetime) -> datetime:
    # Arrow wants one time zone per column; records may carry any offset.
    return t.astimezone(timezone.utc)
