"""Redis Stack cache backend: entries are hashes indexed by RediSearch (redisvl schema),
KNN with a tag filter on the scope, expiry by PEXPIREAT, a sorted set per partition for max_size.

Keys (all under `prefix`): cache:e:<id> entry hash (indexed), cache:x:<scope>:<text hash> -> id
(exact pointer), cache:p:<partition> zset of ids, cache:stats counters, cache:rs:<request id>
which entry served a request (JSON; cache:r:<request id>, a hash, before 2026-12-06),
cache:r:<request id>:reported (set once: a served answer counts one report), cache:th:<partition>
a threshold tightened by reports (hash, expires).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
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
)
from proxy.cache.bookkeeping import Batch, HitTally

RETURN_FIELDS = [f for f in ENTRY_FIELDS if f != "id"]
VALUE_FIELDS = ["hits", "cost", "created"]  # what eviction ranks by (Entry.value)
PAGE = 1000

# Exact lookups in one round trip: per key, the pointer, then the entry's fields without its
# embedding. GET + HGETALL were two round trips and moved the 1.5 KB vector on every hit (16 % of
# a Redis exact hit's proxy CPU, docs/performance.md). The entry keys are derived from the
# pointers' values, so they are not in KEYS: the cache's Redis Stack is never a cluster
# (proxy/cache/factory.py). A found entry comes back as one JSON array [id, fields...], not as
# 19 RESP elements: redis-py's Python parser costs ~5 us per element (proxy CPU per lookup 126 ->
# 33 us, `python scripts/bench_hits.py backend`). No pointer, or an entry gone (its answer
# missing), is nil.
EXACT_LUA = """
local found = {}
for i, key in ipairs(KEYS) do
  local id = redis.call('GET', key)
  local fields = id and redis.call('HMGET', ARGV[1] .. id, FIELDS)
  if fields and fields[RESPONSE] then
    table.insert(fields, 1, id)
    found[i] = cjson.encode(fields)
  else
    found[i] = false
  end
end
return found
""".replace("FIELDS", ", ".join(f"'{name}'" for name in RETURN_FIELDS)).replace(
    "RESPONSE", str(RETURN_FIELDS.index("response") + 1))
# A batch of bookkeeping in one script call (bookkeeping.py): each hit counts and extends its
# entry if it still exists (a hit flushed after its entry was deleted must not leave a stray
# half hash in the index), the served records are written as hashes that expire, the counters
# are added. One command instead of a pipeline of 2 per served record + 1 per counter: redis-py
# packs and parses every command in Python (the pipeline was 7 % of a Redis hit's proxy CPU).
# Served records of the same entry share one JSON object of fields and list only their ids; each
# is one SET of that JSON with its TTL (a hash and its PEXPIRE were two commands per hit).
# KEYS: entry, pointer per hit, then the stats hash. ARGV: hits, groups, counters, served-key
# prefix; count, expires_at (s), expires_at (ms) per hit; per group of served records its TTL
# (ms), its fields (JSON), how many, their request ids; name, amount per counter.
BOOK_LUA = """
local hits, groups, counters, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[4]
local a = 4
for i = 1, hits * 2, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'hits', ARGV[a + 1])
    redis.call('HSET', KEYS[i], 'expires_at', ARGV[a + 2])
    redis.call('PEXPIREAT', KEYS[i], ARGV[a + 3])
    redis.call('PEXPIREAT', KEYS[i + 1], ARGV[a + 3])
  end
  a = a + 3
end
for _ = 1, groups do
  local ttl, fields, n = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  for j = a + 4, a + 3 + n do
    redis.call('SET', prefix .. ARGV[j], fields, 'PX', ttl)
  end
  a = a + 3 + n
end
for _ = 1, counters do
  redis.call('HINCRBYFLOAT', KEYS[hits * 2 + 1], ARGV[a + 1], ARGV[a + 2])
  a = a + 2
end
return 0
"""


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


class SharedLookups:
    """Exact lookups that are ready in the same turn of the event loop go out as one script
    call: each Redis call costs the proxy ~100 us of client CPU (redis-py: pool, retry, pack,
    parse) however little it asks, and at 64 concurrent hits several are ready at once."""

    def __init__(self, script: AsyncScript, entry_prefix: str) -> None:
        self._script = script
        self._entry_prefix = entry_prefix
        self._waiting: list[tuple[str, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((key, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._send)
        return await future

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._run(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, waiting: list[tuple[str, asyncio.Future[Any]]]) -> None:
        try:
            found = await self._script(keys=[key for key, _ in waiting],
                                       args=[self._entry_prefix])
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each waiting lookup raises it (then bypasses)
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(waiting, found, strict=True):
            if not future.done():  # not cancelled meanwhile (a client that went away)
                future.set_result(reply)


class RedisCacheBackend:
    """Shared by every replica; uses the app's Redis client (bytes responses)."""

    def __init__(self, client: aioredis.Redis, prefix: str, dims: int,
                 algorithm: str = "hnsw") -> None:
        self._r = client
        self._p = prefix + "cache:"
        self.index = AsyncSearchIndex(schema_for(prefix, dims, algorithm), redis_client=client)
        self._lookups = SharedLookups(client.register_script(EXACT_LUA), self._p + "e:")
        self._book_script = client.register_script(BOOK_LUA)
        # partitions this replica is evicting: an eviction reads the whole partition, and a
        # store arriving meanwhile would start another (the soak: every ~15 requests, 54 % of
        # the proxy's time); it leaves the partition a few entries over until the next store
        self._evicting: set[str] = set()

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
        found = await self._lookups.get(self._exact_key(scope, text_hash))
        if found is None:
            return None  # no pointer, or its entry is gone
        entry_id, *values = orjson.loads(found)
        return Entry.from_fields({"id": entry_id, **{  # a field HMGET did not find: false
            name: None if value is False else value
            for name, value in zip(RETURN_FIELDS, values, strict=True)}})

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
        return await self._evict(partition_key, max_size) if size > max_size else 0

    async def _evict(self, partition_key: str, max_size: int) -> int:
        """Evict down to eviction_target, once per partition at a time on this replica: the
        puts that find it over max_size meanwhile leave it to the one running."""
        if partition_key in self._evicting:
            return 0
        self._evicting.add(partition_key)
        try:
            return await self._evict_now(partition_key, max_size)
        finally:
            self._evicting.discard(partition_key)

    async def _evict_now(self, partition_key: str, max_size: int) -> int:
        ids = [_s(i) for i in await self._r.zrange(partition_key, 0, -1)]
        pipe = self._r.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hmget(self._entry_key(entry_id), VALUE_FIELDS)
        rows = await pipe.execute()
        gone = [i for i, row in zip(ids, rows, strict=True) if row[2] is None]
        if gone:
            await self._r.zrem(partition_key, *gone)
        # Entry.value's order (dollars saved, then age), from the three fields it needs
        live = sorted((float(hits or 0) * float(cost or 0), float(created), entry_id)
                      for entry_id, (hits, cost, created) in zip(ids, rows, strict=True)
                      if created is not None)
        victims = live[:max(0, len(live) - eviction_target(max_size))]
        return await self.delete([entry_id for _, _, entry_id in victims])

    async def hit(self, entry: Entry, expires_at: float) -> None:
        await self.book(Batch(hits={entry.id: HitTally(entry, 1, expires_at)}))

    async def book(self, batch: Batch) -> None:
        """One script call (BOOK_LUA) writes the whole batch; a Redis that lost the script
        (restarted, SCRIPT FLUSH) gets it loaded and run again by redis-py."""
        keys: list[str] = []
        hits: list[float | int | str] = []
        for tally in batch.hits.values():
            entry = tally.entry
            keys += [self._entry_key(entry.id), self._exact_key(entry.scope, entry.text_hash)]
            hits += [tally.count, tally.expires_at, int(tally.expires_at * 1000)]
        keys.append(f"{self._p}stats")
        groups: dict[tuple[int, bytes], list[str]] = {}
        for served in batch.served:
            fields = orjson.dumps(served.fields, option=orjson.OPT_SORT_KEYS)
            groups.setdefault((int(served.ttl_s * 1000), fields), []).append(served.request_id)
        args: list[float | int | str | bytes] = [len(batch.hits), len(groups),
                                                 len(batch.counters), f"{self._p}rs:", *hits]
        for (ttl_ms, fields), request_ids in groups.items():
            args += [ttl_ms, fields, len(request_ids), *request_ids]
        for name, amount in batch.counters.items():
            args += [name, amount]
        await self._book_script(keys=keys, args=args)

    async def get(self, entry_id: str) -> Entry | None:
        row = await self._r.hgetall(self._entry_key(entry_id))
        return Entry.from_fields({_s(k): v for k, v in row.items()}) if row else None

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Two round trips however many ids (eviction deletes 5 % of a partition at once)."""
        ids = list(dict.fromkeys(entry_ids))
        if not ids:
            return 0
        pipe = self._r.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hmget(self._entry_key(entry_id), ["scope", "text_hash", "partition"])
        rows = await pipe.execute()
        pipe = self._r.pipeline(transaction=False)
        for entry_id, (scope, text_hash, partition) in zip(ids, rows, strict=True):
            if scope is None:
                continue
            pipe.delete(self._entry_key(entry_id))
            pipe.delete(self._exact_key(_s(scope), _s(text_hash or b"")))
            pipe.zrem(f"{self._p}p:{_s(partition or b'')}", entry_id)
        done = await pipe.execute()
        return sum(int(deleted) for deleted in done[::3])

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
        await self._r.set(f"{self._p}rs:{request_id}",
                          orjson.dumps(dict(served), option=orjson.OPT_SORT_KEYS),
                          px=max(1, int(ttl_s * 1000)))

    async def recall(self, request_id: str) -> dict[str, str] | None:
        """The served record (cache:rs:<id>, JSON), or one an older version wrote as a hash
        (cache:r:<id>) and that is still within its report window: one round trip."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(f"{self._p}rs:{request_id}")
        pipe.hgetall(f"{self._p}r:{request_id}")
        found, old = await pipe.execute()
        if found:
            fields = orjson.loads(found)
            return {str(k): str(v) for k, v in fields.items()} if fields else None
        return {_s(k): _s(v) for k, v in old.items()} if old else None

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
