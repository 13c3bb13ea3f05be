"""Redis Stack cache backend: entries are hashes indexed by RediSearch (redisvl schema),
KNN with a tag filter on the scope, expiry by PEXPIREAT, a sorted set per partition for max_size.

Keys (all under `prefix`): cache:e:<id> entry hash (indexed), cache:x:<scope>:<text hash> -> id
(exact pointer), cache:p:<partition> zset of ids, cache:stats counters, cache:r:<request id>
which entry served a request, cache:r:<request id>:reported (set once: a served answer counts one
report), cache:th:<partition> a threshold tightened by reports (hash, expires).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from redisvl.exceptions import RedisSearchError  # type: ignore[import-untyped]
from redisvl.index import AsyncSearchIndex  # type: ignore[import-untyped]
from redisvl.query import CountQuery, FilterQuery, VectorQuery  # type: ignore[import-untyped]
from redisvl.query.filter import FilterExpression, Tag  # type: ignore[import-untyped]
from redisvl.schema import IndexSchema  # type: ignore[import-untyped]

from proxy.cache.backend import (
    ENTRY_FIELDS,
    Entry,
    Tightened,
    Vector,
    eviction_target,
    least_valuable,
)

RETURN_FIELDS = [f for f in ENTRY_FIELDS if f != "id"]
PAGE = 1000


def _s(value: Any) -> str:
    """A Redis reply (bytes from the app's client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _row_entry(row: dict[str, Any]) -> Entry:
    """A redisvl result row (its `id` is the Redis key) -> Entry."""
    return Entry.from_fields({**row, "id": row["id"].rsplit(":", 1)[1]})


def schema_for(prefix: str, dims: int, algorithm: str) -> IndexSchema:
    vector_attrs: dict[str, Any] = {"dims": dims, "distance_metric": "cosine",
                                    "algorithm": algorithm, "datatype": "float32"}
    return IndexSchema.from_dict({
        "index": {"name": f"{prefix}cache-idx", "prefix": f"{prefix}cache:e:",
                  "storage_type": "hash"},
        "fields": [
            {"name": "scope", "type": "tag"},
            {"name": "partition", "type": "tag"},
            {"name": "owner", "type": "tag"},
            {"name": "hits", "type": "numeric", "attrs": {"sortable": True}},
            {"name": "created", "type": "numeric", "attrs": {"sortable": True}},
            {"name": "embedding", "type": "vector", "attrs": vector_attrs},
        ],
    })


class RedisCacheBackend:
    """Shared by every replica; uses the app's Redis client (bytes responses)."""

    def __init__(self, client: aioredis.Redis, prefix: str, dims: int,
                 algorithm: str = "hnsw") -> None:
        self._r = client
        self._p = prefix + "cache:"
        # partitions this replica is evicting: an eviction reads the whole partition, and a
        # store arriving meanwhile would start another (the soak: every ~15 requests, 54 % of
        # the proxy's time); it leaves the partition a few entries over until the next store
        self._evicting: set[str] = set()
        self.index = AsyncSearchIndex(schema_for(prefix, dims, algorithm), redis_client=client)

    async def start(self) -> None:
        if await self.index.exists():
            return
        try:
            await self.index.create(overwrite=False)
        except RedisSearchError:
            # replicas starting together race between exists() and create(): one creates it
            if not await self.index.exists():
                raise

    def _entry_key(self, entry_id: str) -> str:
        return f"{self._p}e:{entry_id}"

    def _exact_key(self, scope: str, text_hash: str) -> str:
        return f"{self._p}x:{scope}:{text_hash}"

    async def get_exact(self, scope: str, text_hash: str) -> Entry | None:
        entry_id = await self._r.get(self._exact_key(scope, text_hash))
        return await self.get(_s(entry_id)) if entry_id else None

    async def search(self, scope: str, vector: Vector, k: int) -> list[tuple[Entry, float]]:
        query = VectorQuery(vector.astype(np.float32).tobytes(), "embedding",
                            return_fields=RETURN_FIELDS, filter_expression=Tag("scope") == scope,
                            num_results=k)
        rows = await self.index.query(query)
        # cosine distance -> similarity
        return [(_row_entry(row), 1.0 - float(row["vector_distance"])) for row in rows]

    async def put(self, entry: Entry, vector: Vector | None, max_size: int) -> int:
        old = await self._r.get(self._exact_key(entry.scope, entry.text_hash))
        if old:
            await self.delete([_s(old)])
        mapping: dict[str, Any] = dict(entry.to_fields())
        if vector is not None:
            mapping["embedding"] = vector.astype(np.float32).tobytes()
        at_ms = int(entry.expires_at * 1000)
        partition_key = f"{self._p}p:{entry.partition}"
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(self._entry_key(entry.id), mapping=cast(Any, mapping))
        pipe.pexpireat(self._entry_key(entry.id), at_ms)
        pipe.set(self._exact_key(entry.scope, entry.text_hash), entry.id, pxat=at_ms)
        pipe.zadd(partition_key, {entry.id: entry.created})
        pipe.zcard(partition_key)
        size = (await pipe.execute())[-1]
        if size <= max_size or partition_key in self._evicting:
            return 0
        self._evicting.add(partition_key)
        try:
            return await self._evict(partition_key, max_size)
        finally:
            self._evicting.discard(partition_key)

    async def _evict(self, partition_key: str, max_size: int) -> int:
        ids = [_s(i) for i in await self._r.zrange(partition_key, 0, -1)]
        pipe = self._r.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hgetall(self._entry_key(entry_id))
        rows = await pipe.execute()
        gone = [i for i, row in zip(ids, rows, strict=True) if not row]
        if gone:
            await self._r.zrem(partition_key, *gone)
        live = [Entry.from_fields({_s(k): v for k, v in row.items()})
                for row in rows if row]
        victims = least_valuable(live, eviction_target(max_size))
        return await self.delete([v.id for v in victims])

    async def hit(self, entry: Entry, expires_at: float) -> None:
        at_ms = int(expires_at * 1000)
        pipe = self._r.pipeline(transaction=False)
        pipe.hincrby(self._entry_key(entry.id), "hits", 1)
        pipe.hset(self._entry_key(entry.id), "expires_at", expires_at)
        pipe.pexpireat(self._entry_key(entry.id), at_ms)
        pipe.pexpireat(self._exact_key(entry.scope, entry.text_hash), at_ms)
        await pipe.execute()

    async def get(self, entry_id: str) -> Entry | None:
        row = await self._r.hgetall(self._entry_key(entry_id))
        return Entry.from_fields({_s(k): v for k, v in row.items()}) if row else None

    async def delete(self, entry_ids: Sequence[str]) -> int:
        gone = 0
        for entry_id in entry_ids:
            key = self._entry_key(entry_id)
            scope, text_hash, partition = await self._r.hmget(
                key, ["scope", "text_hash", "partition"])
            if scope is None:
                continue
            pipe = self._r.pipeline(transaction=False)
            pipe.delete(key)
            pipe.delete(self._exact_key(_s(scope), _s(text_hash or b"")))
            pipe.zrem(f"{self._p}p:{_s(partition or b'')}", entry_id)
            deleted = (await pipe.execute())[0]
            gone += int(deleted)
        return gone

    def _filter(self, scope: str | None, owner: str | None) -> FilterExpression | None:
        expression: FilterExpression | None = None
        for name, value in (("scope", scope), ("owner", owner)):
            if value is not None:
                part = Tag(name) == value
                expression = part if expression is None else expression & part
        return expression

    async def ids_where(self, *, scope: str | None = None, owner: str | None = None) -> list[str]:
        query = FilterQuery(filter_expression=self._filter(scope, owner) or "*",
                            return_fields=["id"], num_results=PAGE)
        ids: list[str] = []
        async for page in self.index.paginate(query, page_size=PAGE):
            ids.extend(row["id"].rsplit(":", 1)[1] for row in page)
        return ids

    async def clear(self) -> int:
        count = await self.count()
        for pattern in ("e:*", "x:*", "p:*"):
            keys = [k async for k in self._r.scan_iter(match=self._p + pattern, count=1000)]
            for start in range(0, len(keys), 500):
                await self._r.delete(*keys[start:start + 500])
        return count

    async def count(self, owner: str | None = None) -> int:
        result = await self.index.query(CountQuery(self._filter(None, owner) or "*"))
        return int(result)

    async def top(self, owner: str | None, limit: int) -> list[Entry]:
        query = FilterQuery(filter_expression=self._filter(None, owner) or "*",
                            return_fields=RETURN_FIELDS, num_results=limit)
        query.sort_by("hits", asc=False)
        return [_row_entry(row) for row in await self.index.query(query)]

    async def incr(self, counters: Mapping[str, float]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for name, amount in counters.items():
            pipe.hincrbyfloat(f"{self._p}stats", name, amount)
        await pipe.execute()

    async def counters(self) -> dict[str, float]:
        raw = await self._r.hgetall(f"{self._p}stats")
        return {_s(k): float(v) for k, v in raw.items()}

    async def remember(self, request_id: str, served: Mapping[str, str], ttl_s: float) -> None:
        key = f"{self._p}r:{request_id}"
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(key, mapping=cast(Any, dict(served)))
        pipe.pexpire(key, int(ttl_s * 1000))
        await pipe.execute()

    async def recall(self, request_id: str) -> dict[str, str] | None:
        raw = await self._r.hgetall(f"{self._p}r:{request_id}")
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    async def claim_report(self, request_id: str, ttl_s: float) -> bool:
        claimed = await self._r.set(f"{self._p}r:{request_id}:reported", 1, nx=True,
                                    px=max(1, int(ttl_s * 1000)))
        return bool(claimed)

    async def threshold(self, partition: str) -> float | None:
        raw = await self._r.hget(f"{self._p}th:{partition}", "threshold")
        return float(raw) if raw is not None else None

    async def set_threshold(self, tightened: Tightened) -> None:
        key = f"{self._p}th:{tightened.partition}"
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping=cast(Any, tightened.as_fields()))
        pipe.pexpireat(key, int(tightened.expires_at * 1000))
        await pipe.execute()

    async def _threshold_keys(self) -> list[Any]:
        return [k async for k in self._r.scan_iter(match=self._p + "th:*", count=1000)]

    async def thresholds(self) -> list[Tightened]:
        pipe = self._r.pipeline(transaction=False)
        for key in await self._threshold_keys():
            pipe.hgetall(key)
        rows = await pipe.execute()
        return [Tightened.from_fields({_s(k): _s(v) for k, v in row.items()})
                for row in rows if row]

    async def clear_thresholds(self) -> int:
        keys = await self._threshold_keys()
        return int(await self._r.delete(*keys)) if keys else 0

    async def close(self) -> None:
        return None  # the client belongs to Services
