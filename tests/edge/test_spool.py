"""Tests for the durable spool: order, bounds, flush order, a full disk, recovery after corruption and kill -9.

Flushes are observed by wrapping os functions; the full disk is a real EFBIG under RLIMIT_FSIZE.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge.spool import Spool, SpoolFull, SpoolWriteError

REPO = Path(__file__).resolve().parents[2]


def _put(spool: Spool, name: str, priority: int = 0, image_size: int = 100) -> str:
    image = hashlib.sha256(name.encode()).digest() * (image_size // 32 + 1)
    return spool.put(json.dumps({"name": name}).encode(), image[:image_size], "image/jpeg", priority)


def _names(spool: Spool, n: int = 1000) -> list[str]:
    return [json.loads(e.meta_json)["name"] for e in spool.next_batch(n)]


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    meta, image = b'{"device": "cam-1"}', os.urandom(5000)
    with Spool(tmp_path) as spool:
        entry_id = spool.put(meta, image, "image/png", priority=3)
        assert spool.depth() == 1
        assert spool.size_bytes() == len(list((tmp_path / "ready").iterdir())[0].read_bytes())
    with Spool(tmp_path) as spool:
        [entry] = spool.next_batch(10)
        assert (entry.id, entry.meta_json, entry.image, entry.media_type, entry.priority) == (
            entry_id,
            meta,
            image,
            "image/png",
            3,
        )
        assert entry.created_at > 0 and entry.attempts == 0
        spool.record_attempt(entry_id)
        assert spool.next_batch(1)[0].attempts == 1
        spool.ack(entry_id)
        spool.ack(entry_id)  # idempotent
        assert spool.depth() == 0 and spool.size_bytes() == 0
        assert list((tmp_path / "ready").iterdir()) == []


def test_ids_sort_in_put_order_and_batches_come_by_priority_then_age(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        ids = [_put(spool, name, priority) for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert _names(spool) == ["b", "d", "a", "c", "e"]
        assert _names(spool, 2) == ["b", "d"]
        spool.ack(ids[1])
        assert _names(spool, 2) == ["d", "a"]
    with Spool(tmp_path) as spool:  # the order is rebuilt from file names alone
        assert _names(spool) == ["d", "a", "c", "e"]


def test_eviction_takes_lowest_priority_then_oldest_and_counts(tmp_path: Path) -> None:
    with Spool(tmp_path / "probe") as probe:
        _put(probe, "x")
        size = probe.size_bytes()

    with Spool(tmp_path / "s", max_bytes=3 * size) as spool:
        for name, priority in [("a", 1), ("b", 0), ("c", 1)]:
            _put(spool, name, priority)
        _put(spool, "d", 1)  # full: b goes (lowest priority)
        assert _names(spool) == ["a", "c", "d"]
        _put(spool, "e", 1)  # a goes (oldest of the lowest)
        assert _names(spool) == ["c", "d", "e"]
        assert (spool.evicted_entries, spool.evicted_bytes) == (2, 2 * size)

        with pytest.raises(SpoolFull):  # ranks below everything there: refused, nothing evicted
            _put(spool, "f", 0)
        assert _names(spool) == ["c", "d", "e"]
        assert (spool.refused_entries, spool.evicted_entries) == (1, 2)

        _put(spool, "g", 2)  # outranks all: the oldest priority-1 entry goes
        assert _names(spool) == ["g", "d", "e"]
        with pytest.raises(SpoolFull):  # bigger than the whole spool
            _put(spool, "huge", 9, image_size=4 * size)
        assert spool.stats()["evicted_entries"] == 3 and spool.stats()["refused_entries"] == 2
        assert spool.size_bytes() == 3 * size
        assert len(list((tmp_path / "s" / "ready").iterdir())) == 3
        assert list((tmp_path / "s" / "tmp").iterdir()) == []  # refused writes are cleaned up


def test_put_flushes_the_data_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))  # the file or folder behind fd
        real_fsync(fd)

    def rename(src: str, dst: str, **kwargs: object) -> None:
        calls.append(("rename", os.fspath(src), os.fspath(dst)))
        real_rename(src, dst, **kwargs)  # type: ignore[arg-type]

    def replace(src: str, dst: str, **kwargs: object) -> None:
        calls.append(("rename", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst, **kwargs)  # type: ignore[arg-type]

    root = tmp_path.resolve()
    with Spool(root) as spool:
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(os, "replace", replace)
        entry_id = _put(spool, "x")
        monkeypatch.undo()

    [(i, (_, temporary, final))] = [(i, c) for i, c in enumerate(calls) if c[0] == "rename"]
    assert final == str(root / "ready" / f"{entry_id}_p0.entry")
    assert Path(temporary).parent == root / "tmp"
    assert ("fsync", temporary) in calls[:i]  # the bytes are on disk before any name points at them
    assert ("fsync", str(root / "ready")) in calls[i + 1 :]  # and the new name is, before put returns


FULL_DISK_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    from edge.spool import Spool

    root, limit = Path(sys.argv[1]), int(sys.argv[2])
    # Ignored, SIGXFSZ no longer kills the process: a write past the limit fails with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    spool = Spool(root)
    spool.put(b'{"i": 0}', b"a" * 1000, "image/jpeg")
    files = lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    before = files()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        spool.put(b'{"i": 1}', b"b" * (4 * limit), "image/jpeg")
        outcome = {"raised": None}
    except Exception as exc:
        cause = exc.__cause__
        outcome = {"raised": type(exc).__name__, "message": str(exc), "cause_errno": getattr(cause, "errno", None)}
    outcome["unchanged"] = files() == before
    outcome["depth_after_failure"] = spool.depth()
    spool.put(b'{"i": 2}', b"c" * 1000, "image/jpeg")  # small enough: the spool is still usable
    outcome["size_bytes"] = spool.size_bytes()
    print(json.dumps(outcome))
    """
)


def test_a_full_disk_during_put_leaves_nothing_behind_and_says_so(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(FULL_DISK_CHILD)
    root = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(64 * 1024)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)

    assert outcome["raised"] == SpoolWriteError.__name__, outcome
    assert str(root) in outcome["message"] and os.strerror(errno.EFBIG) in outcome["message"]
    assert outcome["cause_errno"] == errno.EFBIG
    assert outcome["unchanged"] and outcome["depth_after_failure"] == 1  # no entry, no temp file
    ready = sorted((root / "ready").iterdir())
    assert outcome["size_bytes"] == sum(p.stat().st_size for p in ready)
    with Spool(root) as spool:  # and nothing for recovery to clean up either
        assert [json.loads(e.meta_json) for e in spool.next_batch(10)] == [{"i": 0}, {"i": 2}]
        assert (spool.tmp_removed, spool.corrupt_entries) == (0, 0)


def test_a_put_whose_name_cannot_be_flushed_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path.resolve()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(root / "ready"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # what a dying eMMC answers
        real_fsync(fd)

    with Spool(root) as spool:
        kept = _put(spool, "before")
        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(SpoolWriteError, match=os.strerror(errno.EIO)):
            _put(spool, "unflushed")
        monkeypatch.undo()
        # Raised means not stored: the caller may count it lost, and it never shows up later.
        assert [e.id for e in spool.next_batch(10)] == [kept]
    assert [p.name for p in (root / "ready").iterdir()] == [f"{kept}_p0.entry"]
    assert list((root / "tmp").iterdir()) == []


def test_corrupt_entries_are_quarantined_at_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        truncated, flipped, good = (_put(spool, n, image_size=2000) for n in ("t", "f", "g"))
    files = {p.name.split("_")[0]: p for p in (tmp_path / "ready").iterdir()}
    data = files[truncated].read_bytes()
    files[truncated].write_bytes(data[: len(data) // 2])
    data = bytearray(files[flipped].read_bytes())
    data[len(data) // 2] ^= 0x01
    files[flipped].write_bytes(bytes(data))
    (tmp_path / "ready" / "stray.txt").write_text("not an entry")

    with Spool(tmp_path) as spool:
        assert [e.id for e in spool.next_batch(10)] == [good]
        assert spool.corrupt_entries == 3
        assert spool.size_bytes() == files[good].stat().st_size
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == sorted(
        [files[truncated].name, files[flipped].name, "stray.txt"]
    )


def test_tmp_leftovers_are_removed_at_open(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        _put(spool, "kept")
    (tmp_path / "tmp" / "half-written.tmp").write_bytes(b"ELSP partial")
    with Spool(tmp_path) as spool:
        assert spool.tmp_removed == 1 and spool.depth() == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_reject_moves_entry_aside_with_reason(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        entry_id = _put(spool, "bad")
        assert spool.reject(entry_id, {"status": 422, "reason": "invalid_meta"})
        assert not spool.reject(entry_id, {"status": 422})
        assert spool.depth() == 0 and spool.stats()["rejected_entries"] == 1
    reason = json.loads((tmp_path / "rejected" / f"{entry_id}.reason.json").read_text())
    assert reason["reason"] == "invalid_meta" and reason["id"] == entry_id
    assert [p.name for p in (tmp_path / "rejected").glob("*.entry")] == [f"{entry_id}_p0.entry"]


def test_one_process_per_root(tmp_path: Path) -> None:
    with Spool(tmp_path):
        with pytest.raises(RuntimeError, match="open in another"):
            Spool(tmp_path)
    Spool(tmp_path).close()  # free again once closed


def test_concurrent_puts_and_acks_keep_the_index_consistent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    put_ids: list[str] = []
    acked: set[str] = set()
    done = threading.Event()

    def producer(k: int) -> None:
        for i in range(25):
            put_ids.append(_put(spool, f"{k}-{i}", priority=i % 3))

    def consumer() -> None:
        while not done.is_set() or spool.depth():
            for entry in spool.next_batch(5):
                spool.ack(entry.id)
                acked.add(entry.id)

    producers = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    drain = threading.Thread(target=consumer)
    for t in [*producers, drain]:
        t.start()
    for t in producers:
        t.join()
    done.set()
    drain.join(timeout=20)
    assert len(set(put_ids)) == 100 and acked == set(put_ids)
    assert spool.depth() == 0 and spool.size_bytes() == 0
    spool.close()


CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path
    from edge.spool import Spool

    spool = Spool(Path(sys.argv[1]))
    i = int(sys.argv[2])
    while True:
        image = hashlib.sha256(str(i).encode()).digest() * 2048  # 64 KiB
        entry_id = spool.put(json.dumps({"i": i}).encode(), image, "image/jpeg", priority=i % 3)
        print(i, entry_id, flush=True)  # only now is the entry acknowledged
        i += 1
    """
)


def test_every_acknowledged_entry_survives_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acknowledged: dict[str, int] = {}
    for round_ in range(3):
        # sys.executable is the venv's interpreter when the tests run under it.
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), str(1000 * round_)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(20 + 7 * round_)]  # a different moment each round
        assert all(lines), "child died early"
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
        for line in lines + rest.splitlines(keepends=True):
            if line.endswith("\n"):  # a half-printed last line was never acknowledged
                i, entry_id = line.split()
                acknowledged[entry_id] = int(i)
        assert child.returncode == -signal.SIGKILL

        with Spool(root) as spool:
            entries = {e.id: e for e in spool.next_batch(10**6)}
            assert spool.corrupt_entries == 0
        assert set(acknowledged) <= set(entries)
        for entry_id, i in acknowledged.items():
            entry = entries[entry_id]
            assert json.loads(entry.meta_json) == {"i": i}
            assert entry.image == hashlib.sha256(str(i).encode()).digest() * 2048
            assert entry.priority == i % 3
    assert list((root / "corrupt").iterdir()) == []
