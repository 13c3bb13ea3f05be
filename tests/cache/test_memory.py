"""The in-process cache backend's side tables stay bounded (proxy/cache/memory.py)."""

from __future__ import annotations

from proxy.cache.memory import MemoryCacheBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SERVED = {"entry_id": "e", "department": "sales", "partition": "p", "model": "m", "scope": "s"}


async def test_served_answers_are_bounded_in_number() -> None:
    backend = MemoryCacheBackend(max_served=100)
    for i in range(1000):
        await backend.remember(f"r{i}", SERVED, 86400)
    assert await backend.recall("r999") == SERVED
    assert await backend.recall("r900") == SERVED
    assert await backend.recall("r899") is None  # the oldest make room
    assert backend.served_count() == 100


async def test_served_answers_are_bounded_in_age() -> None:
    clock = Clock()
    backend = MemoryCacheBackend(clock)
    for i in range(50):
        await backend.remember(f"old{i}", SERVED, 60)
    clock.now += 61
    await backend.remember("new", SERVED, 60)
    assert await backend.recall("old0") is None
    assert backend.served_count() == 1


async def test_a_remembered_hit_takes_under_200_bytes() -> None:
    """Every hit is remembered for wrong-answer reports. As a dict per hit (~400 bytes with its
    request id) the embedded soak's RSS climbed 30 % over 200,000 requests with hits
    (docs/performance.md). The fields other than the request id are the served entry's own
    strings, shared with it, as they are here."""
    import tracemalloc
    import uuid

    backend = MemoryCacheBackend(max_served=50_000)
    entries = [{"entry_id": uuid.uuid4().hex, "department": "engineering",
                "partition": uuid.uuid4().hex, "model": "gpt-4o-mini",
                "scope": uuid.uuid4().hex} for _ in range(100)]
    ids = [f"req_{uuid.uuid4().hex}" for _ in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, request_id in enumerate(ids):
            await backend.remember(request_id, entries[n % 100], 86400)
        per_hit = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    finally:
        tracemalloc.stop()
    assert await backend.recall(ids[-1]) == entries[(len(ids) - 1) % 100]
    assert per_hit < 200, per_hit
