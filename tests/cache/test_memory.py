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
