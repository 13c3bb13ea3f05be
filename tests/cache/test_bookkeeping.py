"""Hit bookkeeping gathered in memory and written in batches (proxy/cache/bookkeeping.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.cache.backend import Entry
from proxy.cache.bookkeeping import Batch, Bookkeeper, Served
from proxy.cache.memory import MemoryCacheBackend


def entry(entry_id: str = "a", hits: int = 0) -> Entry:
    now = time.time()
    return Entry(id=entry_id, scope="s", partition="p", owner="sales", department="sales",
                 model="m", text="q", text_hash="h-" + entry_id, response=b"{}", cost=0.5,
                 created=now, expires_at=now + 60, ttl_seconds=60, hits=hits)


def served(request_id: str) -> Served:
    return Served(request_id, {"entry_id": "a", "department": "sales"}, 60)


def plus_hits(stored: Entry, hits: int) -> float:
    """A stand-in dynamic TTL: the expiry grows by an hour per hit, from the stored count."""
    return 4e9 + 3600 * (stored.hits + hits)


async def test_hits_are_written_once_in_one_batch_with_counts_and_expiry() -> None:
    backend = MemoryCacheBackend()
    stored = entry()
    await backend.put(stored, None, 10)
    batches: list[Batch] = []

    async def write(batch: Batch) -> None:
        batches.append(batch)
        await backend.book(batch)

    book = Bookkeeper(write, plus_hits, interval_s=0.001)
    for i in range(3):
        book.hit(stored, {"req|hit:exact|sales|m|": 1, "saved|exact|sales|m|": 0.5},
                 served(f"r{i}"))
    book.count({"req|miss:exact|sales|m|": 1})
    assert batches == []  # nothing is written on the request's path
    while not batches:  # the timer writes it
        await asyncio.sleep(0.001)
    assert len(batches) == 1
    again = await backend.get("a")
    assert again is not None and again.hits == 3
    assert again.expires_at == 4e9 + 3 * 3600  # one expiry for the three hits, from 0 stored
    assert await backend.counters() == {"req|hit:exact|sales|m|": 3.0,
                                        "saved|exact|sales|m|": 1.5,
                                        "req|miss:exact|sales|m|": 1.0}
    assert [await backend.recall(f"r{i}") for i in range(3)] == [served("r0").fields] * 3


async def test_hit_counts_stay_right_across_flushes() -> None:
    backend = MemoryCacheBackend()
    await backend.put(entry(), None, 10)
    book = Bookkeeper(backend.book, plus_hits, interval_s=60)
    for flushes in range(3):
        for _ in range(2):
            current = await backend.get("a")
            assert current is not None
            book.hit(current, {"n": 1}, served("r"))
        await book.flush()
        again = await backend.get("a")
        assert again is not None and again.hits == 2 * (flushes + 1)
    assert await backend.counters() == {"n": 6.0}


async def test_a_failed_write_is_counted_never_raised_and_later_batches_still_go() -> None:
    backend = MemoryCacheBackend()
    await backend.put(entry(), None, 10)
    failures: list[str] = []
    broken = True

    async def write(batch: Batch) -> None:
        if broken:
            raise ConnectionError("redis went away")
        await backend.book(batch)

    book = Bookkeeper(write, plus_hits, lambda: failures.append("bookkeeping"), interval_s=60)
    book.hit(entry(), {"n": 1}, served("lost"))
    await book.flush()  # does not raise
    assert (book.failures, failures) == (1, ["bookkeeping"])
    broken = False
    book.hit(entry(), {"n": 1}, served("kept"))
    await book.flush()
    assert await backend.counters() == {"n": 1.0}
    assert await backend.recall("lost") is None and await backend.recall("kept") is not None


async def test_the_backlog_is_bounded_and_what_it_refuses_is_counted() -> None:
    written: list[Batch] = []

    async def write(batch: Batch) -> None:
        written.append(batch)

    book = Bookkeeper(write, plus_hits, interval_s=60, max_pending=4)
    for i in range(10):
        book.count({f"c{i}": 1})
    assert book.dropped == 6
    await book.flush()
    assert [sorted(b.counters) for b in written] == [["c0", "c1", "c2", "c3"]]


async def test_flush_waits_for_the_write_already_running() -> None:
    release = asyncio.Event()
    written: list[dict[str, float]] = []

    async def slow_write(batch: Batch) -> None:
        await release.wait()
        written.append(batch.counters)

    book = Bookkeeper(slow_write, plus_hits, interval_s=0.001)
    book.count({"first": 1})
    while book._flushing is None:  # the timer started the write
        await asyncio.sleep(0.001)
    book.count({"second": 1})
    flushed = asyncio.get_running_loop().create_task(book.flush())
    await asyncio.sleep(0.01)
    assert not flushed.done()
    release.set()
    await flushed
    assert written == [{"first": 1.0}, {"second": 1.0}]


async def test_close_writes_what_is_pending() -> None:
    backend = MemoryCacheBackend()
    book = Bookkeeper(backend.book, plus_hits, interval_s=60)
    book.count({"n": 2})
    await book.close()
    assert await backend.counters() == {"n": 2.0}


@pytest.mark.parametrize("hits", [0, 5])
async def test_a_hit_on_an_entry_gone_before_the_write_is_skipped(hits: int) -> None:
    backend = MemoryCacheBackend()
    stored = entry(hits=hits)
    await backend.put(stored, None, 10)
    book = Bookkeeper(backend.book, plus_hits, interval_s=60)
    book.hit(stored, {"n": 1}, served("r"))
    await backend.delete(["a"])
    await book.flush()
    assert await backend.get("a") is None
    assert await backend.counters() == {"n": 1.0}
