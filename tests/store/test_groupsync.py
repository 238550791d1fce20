"""GroupFlush: commits made in one turn of a loop share its flushes, none returns before a flush
that began after its write, and a failed flush is never acknowledged."""

from __future__ import annotations

import asyncio
import random
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
        time.sleep(0.002)  # a disk

    group = GroupFlush(flush)
    rng = random.Random(0)

    async def writer() -> None:
        nonlocal writes
        for _ in range(rng.randrange(4)):  # arrive in different turns of the loop
            await asyncio.sleep(0)
        writes += 1
        mine = writes
        await flushed(group)
        # Flushes run in order, so the one that covered us is the first that began after us.
        assert any(n >= mine for n in covered), f"write {mine} returned before any flush covered it"

    async def main() -> None:
        for _ in range(5):
            await asyncio.gather(*(writer() for _ in range(40)))

    asyncio.run(main())
    assert writes == 200
    assert len(covered) <= 2 * 5 * 4, f"{len(covered)} flushes for 200 waiters: they were not shared"


def test_a_failed_flush_fails_every_waiter_it_covered_and_the_next_one_works() -> None:
    fail = threading.Event()
    fail.set()

    def flush() -> None:
        if fail.is_set():
            fail.clear()
            raise OSError(5, "Input/output error")

    group = GroupFlush(flush)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(flushed(group) for _ in range(8)), return_exceptions=True)

    first = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in first), first  # one turn, one flush: all covered by it
    assert asyncio.run(main()) == [None] * 8


def test_a_waiter_that_goes_away_is_still_published_and_does_not_stop_the_others() -> None:
    published: list[str] = []
    group = GroupFlush(lambda: None)

    async def main() -> None:
        gone = asyncio.create_task(group.commit(lambda: published.append("gone"), lambda: None))
        stays = asyncio.create_task(group.commit(lambda: published.append("stays") or 7, lambda: None))
        await asyncio.sleep(0)  # both have committed; the flush is queued behind this turn
        gone.cancel()
        assert await asyncio.wait_for(stays, 5) == 7
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert published == ["gone", "stays"]  # its files are in place even though nobody was answered


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
    assert events == ["flush", *(f"publish {n}" for n in range(5)), "flush"]  # one batch, two flushes


def test_a_failed_first_flush_discards_instead_of_publishing_even_for_a_caller_gone_away() -> None:
    calls: list[str] = []

    def flush() -> None:
        raise OSError(28, "No space left on device")

    group = GroupFlush(flush)

    async def main() -> None:
        gone = asyncio.create_task(group.commit(lambda: calls.append("publish"), lambda: calls.append("discard")))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(OSError, match="No space"):
            await group.commit(lambda: calls.append("publish"), lambda: calls.append("discard"))

    asyncio.run(main())
    assert calls == ["discard", "discard"]


def test_a_failed_second_flush_fails_callers_whose_files_were_published() -> None:
    flushes: list[str] = []

    def flush() -> None:
        flushes.append("flush")
        if len(flushes) == 2:
            raise OSError(5, "Input/output error")

    group = GroupFlush(flush)

    async def main() -> None:
        with pytest.raises(OSError, match="Input/output"):
            await group.commit(lambda: "published", lambda: None)

    asyncio.run(main())
    assert flushes == ["flush", "flush"]


def test_loops_in_different_threads_each_flush_their_own_commits_on_their_own_thread() -> None:
    flushed_in: list[int] = []
    group = GroupFlush(lambda: (flushed_in.append(threading.get_ident()), time.sleep(0.001)))
    # Keyed by the thread's index, not its ident: a finished thread's ident may be handed to the next one.
    done: dict[int, tuple[int, list[int]]] = {}

    def run_loop(index: int) -> None:
        async def main() -> list[int]:
            return await asyncio.gather(*(group.commit(threading.get_ident, lambda: None) for _ in range(50)))

        done[index] = (threading.get_ident(), asyncio.run(main()))

    threads = [threading.Thread(target=run_loop, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(done) == 4
    for ident, published_in in done.values():
        assert published_in == [ident] * 50  # published by its own loop's thread
    assert set(flushed_in) == {ident for ident, _ in done.values()}
