"""ObjectStore on a real local folder and on fsspec's in-memory filesystem."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import pytest

from store.groupsync import GroupFlush, flush_filesystem
from store.objects import ObjectStore, Put


def _all_files(root) -> list[str]:
    return sorted(f for _, _, files in os.walk(root) for f in files)


def test_put_get_list_leave_no_temp_files(tmp_path):
    store = ObjectStore(tmp_path, fsync=True)
    store.put("a/b/one.json", b"1")
    store.put("a/two.json", b"2")
    store.put("a/two.json", b"2 again")  # replaces in place
    store.put("top", b"3", fsync=False)

    assert store.get("a/b/one.json") == b"1"
    assert store.get("a/two.json") == b"2 again"
    assert store.list() == ["a/b/one.json", "a/two.json", "top"]
    assert store.list("a/b") == ["a/b/one.json"]
    assert _all_files(tmp_path) == ["one.json", "top", "two.json"]


def test_missing_key_raises_keyerror_naming_it(tmp_path):
    store = ObjectStore(tmp_path)
    with pytest.raises(KeyError, match="nope/x"):
        store.get("nope/x")
    assert not store.exists("nope/x")
    store.put("nope/x", b"")
    assert store.exists("nope/x") and not store.exists("nope")  # folders are not objects


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b", "a/../b", "", "a/", "a b", "a\\b", "é", ".tmp-x"])
def test_invalid_keys_are_rejected(tmp_path, key):
    store = ObjectStore(tmp_path / "root")
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.exists(key)):
        with pytest.raises(ValueError, match="invalid object key"):
            call()
    assert _all_files(tmp_path) == []  # nothing written, in the root or above it


def test_put_if_absent_has_exactly_one_winner_among_threads(tmp_path):
    store = ObjectStore(tmp_path)
    start = threading.Barrier(16)
    wins: list[bytes] = []

    def writer(n: int) -> None:
        data = f"writer {n}".encode()
        start.wait()
        if store.put_if_absent("race/key", data):
            wins.append(data)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(wins) == 1
    assert store.get("race/key") == wins[0]
    assert _all_files(tmp_path) == ["key"]


def test_stray_temp_files_from_a_crash_are_not_listed(tmp_path):
    store = ObjectStore(tmp_path)
    store.put("inbox/a.json", b"{}")
    (tmp_path / "inbox" / ".tmp-abc123").write_bytes(b"half a rec")
    assert store.list("inbox") == ["inbox/a.json"]


def test_list_treats_prefix_as_a_folder(tmp_path):
    store = ObjectStore(tmp_path)
    store.put("a/x", b"")
    store.put("ab/y", b"")
    assert store.list("a") == store.list("a/") == ["a/x"]
    assert store.list("missing") == []


def test_move_and_delete(tmp_path):
    store = ObjectStore(f"file://{tmp_path}")
    assert store.local_path("k") == tmp_path / "k"
    store.put("pending/k", b"v")
    store.move("pending/k", "done/sub/k")
    assert store.list() == ["done/sub/k"]
    with pytest.raises(KeyError, match="pending/k"):
        store.move("pending/k", "done/k")
    store.delete("done/sub/k")
    store.delete("done/sub/k")  # deleting twice is fine
    assert store.list() == []


def test_memory_backend_behaves_like_local():
    store = ObjectStore(f"memory://test-{uuid.uuid4().hex}/root")
    assert store.local_path("k") is None
    store.put("a/k", b"v")
    assert store.put_if_absent("a/k", b"other") is False
    assert store.put_if_absent("a/j", b"new") is True
    assert store.get("a/k") == b"v" and store.exists("a/j")
    store.move("a/k", "b/k")
    assert store.list() == ["a/j", "b/k"]
    assert store.list("b") == ["b/k"]
    with pytest.raises(KeyError):
        store.get("a/k")
    with pytest.raises(KeyError):
        store.move("a/k", "c/k")
    store.delete("b/k")
    assert store.list() == ["a/j"]


@pytest.mark.parametrize("where", ["local", "memory"])
def test_open_reads_any_range_and_knows_the_size(tmp_path, where):
    store = ObjectStore(tmp_path if where == "local" else f"memory://test-{uuid.uuid4().hex}/root")
    data = os.urandom(300_000)
    store.put("blobs/x", data)
    with store.open("blobs/x") as f:
        assert f.seek(0, os.SEEK_END) == len(data)
        f.seek(123_456)
        assert f.read(1000) == data[123_456:124_456]
        f.seek(len(data) - 7)
        assert f.read(100) == data[-7:]  # reading past the end gives what there is
    with pytest.raises(KeyError, match="blobs/y"):
        store.open("blobs/y")


def _put_shared(store: ObjectStore, *puts: Put) -> list[bool]:
    return asyncio.run(store.put_shared(*puts))


@pytest.mark.parametrize("where", ["local", "local without fsync", "memory"])
def test_put_shared_writes_replaces_and_creates_only_if_absent(tmp_path, where):
    store = {"local": lambda: ObjectStore(tmp_path), "local without fsync": lambda: ObjectStore(tmp_path, fsync=False),
             "memory": lambda: ObjectStore(f"memory://test-{uuid.uuid4().hex}")}[where]()
    assert _put_shared(store, Put("blobs/a", b"1"), Put("inbox/r.json", b"{}", if_absent=True)) == [True, True]
    assert _put_shared(store, Put("blobs/a", b"2"), Put("inbox/r.json", b"{x}", if_absent=True)) == [True, False]
    assert store.get("blobs/a") == b"2" and store.get("inbox/r.json") == b"{}"
    assert _put_shared(store) == []  # nothing to write: just a flush
    assert store.list() == ["blobs/a", "inbox/r.json"]
    if where != "memory":
        assert _all_files(tmp_path) == ["a", "r.json"]  # no temp file left behind


def test_put_shared_flushes_the_bytes_before_any_name_appears_and_the_names_after(tmp_path):
    store = ObjectStore(tmp_path)
    seen: list[list[str]] = []  # the names that existed at each flush
    # Watch the store's real flushes (syncfs still runs): the first must find no name yet.
    store._group = GroupFlush(lambda: (seen.append(store.list()), flush_filesystem(tmp_path)))
    assert _put_shared(store, Put("blobs/b", b"x" * 70_000), Put("inbox/c.json", b"{}", if_absent=True)) == [True, True]
    assert seen == [[], ["blobs/b", "inbox/c.json"]]


def test_concurrent_put_shared_if_absent_has_one_winner(tmp_path):
    store = ObjectStore(tmp_path)

    async def race() -> list[list[bool]]:
        return await asyncio.gather(*(store.put_shared(Put("race/key", f"writer {n}".encode(), if_absent=True))
                                      for n in range(16)))

    results = [r for [r] in asyncio.run(race())]
    assert results.count(True) == 1
    assert store.get("race/key") == f"writer {results.index(True)}".encode()
    assert _all_files(tmp_path) == ["key"]


def test_put_shared_that_fails_to_flush_publishes_nothing(tmp_path):
    store = ObjectStore(tmp_path)

    def broken_disk() -> None:
        raise OSError(5, "Input/output error")

    store._group = GroupFlush(broken_disk)
    with pytest.raises(OSError, match="Input/output"):
        _put_shared(store, Put("blobs/d", b"x"), Put("inbox/d.json", b"{}", if_absent=True))
    assert store.list() == [] and _all_files(tmp_path) == []
