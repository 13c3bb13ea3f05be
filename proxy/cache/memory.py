"""In-process cache backend: dicts plus brute-force numpy KNN per scope (behaves like Redis)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from proxy.cache.backend import Entry, Tightened, Vector, eviction_target, least_valuable
from proxy.cache.bookkeeping import Batch
from proxy.cache.config import MAX_REMEMBERED


@dataclass
class _Scope:
    ids: list[str] = field(default_factory=list)
    matrix: Vector | None = None  # rows of `ids` that have vectors, rebuilt lazily
    matrix_ids: list[str] = field(default_factory=list)




class MemoryCacheBackend:
    """Single-process storage; `clock` is injectable for expiry tests."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 max_served: int = MAX_REMEMBERED) -> None:
        self._clock = clock
        self._max_served = max_served
        self._entries: dict[str, Entry] = {}
        self._vectors: dict[str, Vector] = {}
        self._scopes: dict[str, _Scope] = {}
        self._exact: dict[tuple[str, str], str] = {}
        self._partitions: dict[str, set[str]] = {}
        self._counters: dict[str, float] = {}
        # request id -> (expires at, field names, *values: what recall() gives back), oldest
        # first: one per hit, so bounded in number and age, expired ones dropped from the front
        # in O(1) per call
        self._served: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._reported: OrderedDict[str, float] = OrderedDict()  # request id -> claimed until
        self._thresholds: dict[str, Tightened] = {}

    def _live(self, entry_id: str | None) -> Entry | None:
        entry = self._entries.get(entry_id) if entry_id else None
        if entry is not None and entry.expires_at <= self._clock():
            self._drop(entry)
            return None
        return entry

    def _drop(self, entry: Entry) -> None:
        self._entries.pop(entry.id, None)
        self._vectors.pop(entry.id, None)
        if self._exact.get((entry.scope, entry.text_hash)) == entry.id:
            del self._exact[(entry.scope, entry.text_hash)]
        scope = self._scopes.get(entry.scope)
        if scope is not None and entry.id in scope.ids:
            scope.ids.remove(entry.id)
            scope.matrix = None
            if not scope.ids:
                del self._scopes[entry.scope]
        self._partitions.get(entry.partition, set()).discard(entry.id)

    async def get_exact(self, scope: str, text_hash: str) -> Entry | None:
        return self._live(self._exact.get((scope, text_hash)))

    async def search(self, scope: str, vector: Vector, k: int) -> list[tuple[Entry, float]]:
        bucket = self._scopes.get(scope)
        if bucket is None:
            return []
        for entry_id in list(bucket.ids):
            self._live(entry_id)
        if bucket.matrix is None:
            bucket.matrix_ids = [i for i in bucket.ids if i in self._vectors]
            rows = [self._vectors[i] for i in bucket.matrix_ids]
            bucket.matrix = np.stack(rows) if rows else np.zeros((0, len(vector)), np.float32)
        if not bucket.matrix_ids:
            return []
        sims = bucket.matrix @ vector
        order = np.argsort(-sims)[:k]
        return [(self._entries[bucket.matrix_ids[i]], float(sims[i])) for i in order]

    async def put(self, entry: Entry, vector: Vector | None, max_size: int) -> int:
        old = self._exact.get((entry.scope, entry.text_hash))
        if old is not None and old in self._entries:
            self._drop(self._entries[old])
        self._entries[entry.id] = entry
        if vector is not None:
            self._vectors[entry.id] = vector
        bucket = self._scopes.setdefault(entry.scope, _Scope())
        bucket.ids.append(entry.id)
        bucket.matrix = None
        self._exact[(entry.scope, entry.text_hash)] = entry.id
        members = self._partitions.setdefault(entry.partition, set())
        members.add(entry.id)
        if len(members) <= max_size:
            return 0
        live = [e for e in (self._live(i) for i in list(members)) if e is not None]
        victims = least_valuable(live, eviction_target(max_size))
        for victim in victims:
            self._drop(victim)
        return len(victims)

    async def hit(self, entry: Entry, expires_at: float) -> None:
        stored = self._entries.get(entry.id)
        if stored is not None:
            stored.hits += 1
            stored.expires_at = expires_at

    async def book(self, batch: Batch) -> None:
        for tally in batch.hits.values():
            stored = self._entries.get(tally.entry.id)
            if stored is not None:
                stored.hits += tally.count
                stored.expires_at = tally.expires_at
        await self.incr(batch.counters)
        for served in batch.served:
            await self.remember(served.request_id, served.fields, served.ttl_s)

    async def get(self, entry_id: str) -> Entry | None:
        return self._live(entry_id)

    async def delete(self, entry_ids: Sequence[str]) -> int:
        gone = 0
        for entry_id in entry_ids:
            entry = self._live(entry_id)
            if entry is not None:
                self._drop(entry)
                gone += 1
        return gone

    async def ids_where(self, *, scope: str | None = None, owner: str | None = None) -> list[str]:
        return [e.id for e in list(self._entries.values())
                if self._live(e.id) is not None and (scope is None or e.scope == scope)
                and (owner is None or e.owner == owner)]

    async def clear(self) -> int:
        count = len(await self.ids_where())
        self._entries.clear()
        self._vectors.clear()
        self._scopes.clear()
        self._exact.clear()
        self._partitions.clear()
        return count

    async def count(self, owner: str | None = None) -> int:
        return len(await self.ids_where(owner=owner))

    async def top(self, owner: str | None, limit: int) -> list[Entry]:
        ids = await self.ids_where(owner=owner)
        entries = [self._entries[i] for i in ids]
        return sorted(entries, key=lambda e: (-e.hits, -e.created))[:limit]

    async def incr(self, counters: Mapping[str, float]) -> None:
        for name, amount in counters.items():
            self._counters[name] = self._counters.get(name, 0.0) + amount

    async def counters(self) -> dict[str, float]:
        return dict(self._counters)

    async def remember(self, request_id: str, served: Mapping[str, str], ttl_s: float) -> None:
        now = self._clock()
        served_map = self._served
        while served_map and next(iter(served_map.values()))[0] <= now:
            served_map.popitem(last=False)
        while len(served_map) >= self._max_served:
            served_map.popitem(last=False)
        # one tuple per hit, the expiry first, then the field names (a shared tuple while they
        # are the usual ones) and their values: ~186 bytes a hit with its map entry, where a
        # dict per hit was ~330 (tests/cache/test_memory.py)
        names = tuple(served)
        served_map[request_id] = (now + ttl_s, self._names.setdefault(names, names),
                                  *served.values())

    def served_count(self) -> int:
        return len(self._served)

    async def recall(self, request_id: str) -> dict[str, str] | None:
        found = self._served.get(request_id)
        if found is None or found[0] <= self._clock():
            return None
        return dict(zip(found[1], found[2:], strict=True))

    async def claim_report(self, request_id: str, ttl_s: float) -> bool:
        now = self._clock()
        reported = self._reported
        if reported.get(request_id, 0.0) > now:
            return False
        while reported and (next(iter(reported.values())) <= now
                            or len(reported) >= self._max_served):
            reported.popitem(last=False)
        reported[request_id] = now + ttl_s
        return True

    async def threshold(self, partition: str) -> float | None:
        found = self._thresholds.get(partition)
        return found.threshold if found is not None and found.expires_at > self._clock() else None

    async def set_threshold(self, tightened: Tightened) -> None:
        self._thresholds[tightened.partition] = tightened

    async def thresholds(self) -> list[Tightened]:
        now = self._clock()
        return [t for t in self._thresholds.values() if t.expires_at > now]

    async def clear_thresholds(self) -> int:
        live = len(await self.thresholds())
        self._thresholds.clear()
        return live

    async def close(self) -> None:
        return None
