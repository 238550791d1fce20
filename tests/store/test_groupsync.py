"""GroupFlush: concurrent waiters share flushes, and none returns before a flush that began after it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from store.groupsync import GroupFlush, flush_filesystem


async def flushed(group: GroupFlush) -> None:
    """A commit with nothing to publish: returns once what was written before it is on disk."""
    await group.commit(lambda: None, lambda: None)


def test_each_waiter_is_covered_by_a_flush_that_began_after_it_and_waiters_share_flushes() -> None:
    writes = 0  # "writes" made so far, as each coroutine would make before awaiting
    covered: list[int] = []  # per flush: how many writes had been made when it began

    def flush() -> None:
        covered.append(writes)
        time.sleep(0.02)  # a slow disk: waiters pile up behind it

    group = GroupFlush(flush)

    async def writer() -> None:
        nonlocal writes
        writes += 1
        mine = writes
        await flushed(group)
        # Flushes finish in order, so the one that covered us is the first that began after us.
        assert any(n >= mine for n in covered), f"write {mine} returned before any flush covered it"

    async def main() -> None:
        for _ in range(5):
            await asyncio.gather(*(writer() for _ in range(40)))

    asyncio.run(main())
    assert writes == 200
    assert len(covered) < 50, f"{len(covered)} flushes for 200 waiters: they were not shared"


def test_a_failed_flush_fails_every_waiter_it_covered_and_the_next_one_works() -> None:
    fail = threading.Event()
    fail.set()

    def flush() -> None:
        time.sleep(0.01)
        if fail.is_set():
            fail.clear()
            raise OSError(5, "Input/output error")

    group = GroupFlush(flush)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(flushed(group) for _ in range(8)), return_exceptions=True)

    first = asyncio.run(main())
    failed = [r for r in first if isinstance(r, OSError)]
    assert failed, "no waiter saw the failed flush"
    assert all(r is None or isinstance(r, OSError) for r in first)
    assert asyncio.run(main()) == [None] * 8


def test_a_waiter_that_goes_away_does_not_stop_the_others() -> None:
    release = threading.Event()
    group = GroupFlush(lambda: release.wait(5))

    async def main() -> None:
        gone = asyncio.create_task(flushed(group))
        stays = asyncio.create_task(flushed(group))
        await asyncio.sleep(0.05)
        gone.cancel()
        release.set()
        await asyncio.wait_for(stays, 5)
        assert gone.cancelled()

    asyncio.run(main())


def test_flush_filesystem_flushes_a_real_folder_and_names_a_missing_one(tmp_path) -> None:
    (tmp_path / "x").write_bytes(b"data")
    flush_filesystem(tmp_path)  # syncfs(2) here; must not raise
    with pytest.raises(OSError):
        flush_filesystem(tmp_path / "missing")


def test_commit_publishes_between_two_flushes_and_returns_what_publish_returned() -> None:
    events: list[str] = []
    group = GroupFlush(lambda: events.append("flush"))

    def publish(n: int) -> int:
        events.append(f"publish {n}")
        if n == 3:
            raise FileExistsError("only this caller's problem")
        return n * 10

    async def main() -> list[object]:
        return await asyncio.gather(*(group.commit(lambda n=n: publish(n), lambda: events.append("discard"))
                                      for n in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:3] == [0, 10, 20] and isinstance(results[3], FileExistsError) and results[4] == 40
    assert "discard" not in events
    # Every publish sits between a flush before it and a flush after it.
    for i, event in enumerate(events):
        if event.startswith("publish"):
            assert "flush" in events[:i] and "flush" in events[i:]


def test_a_failed_first_flush_discards_instead_of_publishing_even_for_a_caller_gone_away() -> None:
    release = threading.Event()
    calls: list[str] = []

    def flush() -> None:
        release.wait(5)
        raise OSError(28, "No space left on device")

    group = GroupFlush(flush)

    async def main() -> None:
        gone = asyncio.create_task(group.commit(lambda: calls.append("publish"), lambda: calls.append("discard")))
        await asyncio.sleep(0.05)
        gone.cancel()
        release.set()
        with pytest.raises(OSError, match="No space"):
            await group.commit(lambda: calls.append("publish"), lambda: calls.append("discard"))

    asyncio.run(main())
    assert calls == ["discard", "discard"]
