"""Durable on-disk queue of hard examples waiting for upload, bounded in bytes.

A capture is fsynced here before any network is touched, so it survives kill -9 and power loss.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.durable import fsync_dir, write_durably
from edge.spool_format import CorruptEntry, Record, decode, encode, file_name, parse_file_name

log = logging.getLogger(__name__)


class SpoolFull(Exception):
    """The entry ranks below everything in a full spool, so it was not stored (and is counted)."""


class SpoolWriteError(Exception):
    """The disk refused an entry (full, file too large, I/O error); nothing of it was kept."""


@dataclass(frozen=True)
class SpoolEntry:
    id: str
    meta_json: bytes
    image: bytes
    media_type: str
    priority: int
    created_at: float
    attempts: int = 0
    """Failed upload attempts since this process opened the spool (not persisted)."""


@dataclass
class _Slot:
    """What the in-memory index keeps about an entry, so that ordering needs no disk reads."""

    priority: int
    size: int
    attempts: int = 0


class Spool:
    """A durable, priority-ordered, byte-bounded queue in `root/` (ready/, tmp/, corrupt/, rejected/).

    Thread-safe: the frame loop puts while the uploader thread reads and acks. One process
    at a time per root (enforced with a lock file), so entry ids stay unique.
    """

    def __init__(self, root: Path, max_bytes: int = 2 * 1024**3) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._ready = self.root / "ready"
        self._tmp = self.root / "tmp"
        self._corrupt = self.root / "corrupt"
        self._rejected = self.root / "rejected"
        for folder in (self._ready, self._tmp, self._corrupt, self._rejected):
            folder.mkdir(parents=True, exist_ok=True)

        self._lock_file = open(self.root / "lock", "a+b")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"spool {self.root} is open in another process") from None

        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        # Per priority, ids in insertion order; ids only ever grow, so that is oldest first.
        self._queues: dict[int, dict[str, _Slot]] = {}
        self._bytes = 0
        self._last_ns = 0
        self._listeners: list[Callable[[], None]] = []

        self.evicted_entries = 0
        self.evicted_bytes = 0
        self.refused_entries = 0
        self.refused_bytes = 0
        self.corrupt_entries = 0
        self.rejected_entries = 0
        self.tmp_removed = 0
        self._recover()

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self._lock_file.close()  # also releases the flock

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_put_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every acknowledged put (the uploader uses it to wake up)."""
        self._listeners.append(callback)

    # --- writing ---------------------------------------------------------------------

    def put(self, meta_json: bytes, image: bytes, media_type: str, priority: int = 0) -> str:
        """Store one entry durably and return its id.

        Raises `SpoolFull` if it ranks too low to fit, `SpoolWriteError` if the disk refuses it;
        either way nothing of the entry is left on disk.
        """
        data = encode(Record(priority, time.time(), media_type, meta_json, image))
        tmp = self._tmp / f"{uuid.uuid4().hex}.tmp"
        try:
            # Write and fsync outside the lock: fsync can take tens of ms on eMMC, and
            # the uploader should not wait on it.
            write_durably(tmp, data, exclusive=True)
            with self._lock:
                victims = self._plan_eviction(priority, len(data))
                if victims is None:
                    self.refused_entries += 1
                    self.refused_bytes += len(data)
                    raise SpoolFull(
                        f"{len(data)} bytes at priority {priority} do not fit in {self.max_bytes} "
                        f"without evicting higher-priority entries"
                    )
                for victim in victims:
                    self._evict(victim)
                entry_id = self._new_id()
                final = self._ready / file_name(entry_id, priority)
                os.rename(tmp, final)
                try:
                    fsync_dir(self._ready)
                except OSError:
                    final.unlink(missing_ok=True)  # not acknowledged, so not kept: the caller was told it failed
                    raise
                self._index(entry_id, _Slot(priority, len(data)))
        except OSError as exc:
            raise SpoolWriteError(f"spool {self.root} could not store a {len(data)}-byte entry: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)  # gone already when the rename happened
        for listener in self._listeners:
            listener()
        return entry_id

    def _plan_eviction(self, priority: int, size: int) -> list[str] | None:
        """Ids to evict so `size` more bytes fit: lowest priority, oldest first, never
        above `priority`. None when even that would not make room (then evict nothing)."""
        excess = self._bytes + size - self.max_bytes
        if excess <= 0:
            return []
        victims: list[str] = []
        for queue_priority in sorted(self._queues):
            if queue_priority > priority:
                break
            for entry_id, slot in self._queues[queue_priority].items():
                victims.append(entry_id)
                excess -= slot.size
                if excess <= 0:
                    return victims
        return None

    def _evict(self, entry_id: str) -> None:
        slot = self._forget(entry_id)
        (self._ready / file_name(entry_id, slot.priority)).unlink(missing_ok=True)
        self.evicted_entries += 1
        self.evicted_bytes += slot.size
        log.warning("spool full: evicted %s (priority %d, %d bytes)", entry_id, slot.priority, slot.size)

    def _new_id(self) -> str:
        # Strictly increasing even if the clock steps back (a Jetson without RTC at boot).
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return f"{self._last_ns:020d}"

    # --- reading and settling --------------------------------------------------------

    def next_batch(self, n: int) -> list[SpoolEntry]:
        """Up to `n` entries, highest priority first, then oldest. They stay until acked."""
        batch: list[SpoolEntry] = []
        with self._lock:
            for priority in sorted(self._queues, reverse=True):
                for entry_id, slot in list(self._queues.get(priority, {}).items()):
                    if len(batch) >= n:
                        return batch
                    entry = self._read(entry_id, slot)
                    if entry is not None:
                        batch.append(entry)
        return batch

    def _read(self, entry_id: str, slot: _Slot) -> SpoolEntry | None:
        path = self._ready / file_name(entry_id, slot.priority)
        try:
            record = decode(path.read_bytes())
        except FileNotFoundError:
            log.error("spool entry %s vanished from disk", entry_id)
            self._forget(entry_id)
            return None
        except CorruptEntry as exc:
            # Rotted since it was verified at open: set it aside rather than upload garbage.
            self._quarantine(path, str(exc))
            self._forget(entry_id)
            return None
        return SpoolEntry(
            id=entry_id,
            meta_json=record.meta_json,
            image=record.image,
            media_type=record.media_type,
            priority=record.priority,
            created_at=record.created_at,
            attempts=slot.attempts,
        )

    def ack(self, entry_id: str) -> None:
        """Delete a delivered entry. Idempotent."""
        with self._lock:
            slot = self._slots.get(entry_id)
            if slot is None:
                return
            self._forget(entry_id)
            # No directory fsync: if power loss resurrects the file, it is uploaded again
            # and the server answers "duplicate" (uploads are idempotent on sha256).
            (self._ready / file_name(entry_id, slot.priority)).unlink(missing_ok=True)

    def record_attempt(self, entry_id: str) -> None:
        """Count a failed upload attempt for `entry_id` (shows up as `SpoolEntry.attempts`)."""
        with self._lock:
            slot = self._slots.get(entry_id)
            if slot is not None:
                slot.attempts += 1

    def reject(self, entry_id: str, reason: Mapping[str, object]) -> bool:
        """Move an entry the server refused for good to `rejected/`, beside `<id>.reason.json`.

        Kept, not deleted, so that a person can see what was refused and why. Returns False
        when the entry is no longer in the spool.
        """
        with self._lock:
            slot = self._slots.get(entry_id)
            if slot is None:
                return False
            name = file_name(entry_id, slot.priority)
            # Reason first, so that a rejected entry is never found without its reason.
            note = {"id": entry_id, "rejected_at": time.time(), **reason}
            write_durably(self._rejected / f"{entry_id}.reason.json.tmp", json.dumps(note, default=str).encode(),
                          exclusive=True)
            os.replace(self._rejected / f"{entry_id}.reason.json.tmp", self._rejected / f"{entry_id}.reason.json")
            os.replace(self._ready / name, self._rejected / name)
            fsync_dir(self._rejected)
            fsync_dir(self._ready)
            self._forget(entry_id)
            self.rejected_entries += 1
            return True

    # --- size and counters -----------------------------------------------------------

    def depth(self) -> int:
        with self._lock:
            return len(self._slots)

    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "depth": len(self._slots),
                "size_bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "evicted_entries": self.evicted_entries,
                "evicted_bytes": self.evicted_bytes,
                "refused_entries": self.refused_entries,
                "refused_bytes": self.refused_bytes,
                "corrupt_entries": self.corrupt_entries,
                "rejected_entries": self.rejected_entries,
                "tmp_removed": self.tmp_removed,
            }

    # --- index -----------------------------------------------------------------------

    def _index(self, entry_id: str, slot: _Slot) -> None:
        self._slots[entry_id] = slot
        self._queues.setdefault(slot.priority, {})[entry_id] = slot
        self._bytes += slot.size

    def _forget(self, entry_id: str) -> _Slot:
        slot = self._slots.pop(entry_id)
        queue = self._queues[slot.priority]
        del queue[entry_id]
        if not queue:
            del self._queues[slot.priority]
        self._bytes -= slot.size
        return slot

    def _quarantine(self, path: Path, why: str) -> None:
        log.error("spool entry %s is corrupt (%s): moved to %s", path.name, why, self._corrupt)
        os.replace(path, self._corrupt / path.name)
        self.corrupt_entries += 1

    def _recover(self) -> None:
        """Rebuild the index from disk after a clean exit, a kill -9 or a power cut."""
        # Anything in tmp/ was never acknowledged to the caller: safe to drop.
        for leftover in self._tmp.iterdir():
            leftover.unlink()
            self.tmp_removed += 1

        found: list[tuple[str, int, Path]] = []
        for path in self._ready.iterdir():
            parsed = parse_file_name(path.name)
            if parsed is None:
                self._quarantine(path, "unexpected file name")
            else:
                found.append((*parsed, path))

        for entry_id, priority, path in sorted(found):  # oldest first, as _index expects
            try:
                record = decode(path.read_bytes())
                if record.priority != priority:
                    raise CorruptEntry(f"name says priority {priority}, header {record.priority}")
            except CorruptEntry as exc:
                self._quarantine(path, str(exc))
                continue
            self._index(entry_id, _Slot(priority, path.stat().st_size))
            self._last_ns = max(self._last_ns, int(entry_id))

        if self.corrupt_entries:
            fsync_dir(self._ready)
