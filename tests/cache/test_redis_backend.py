"""The Redis Stack cache backend (proxy/cache/redis_backend.py) on a real Redis Stack.

backend.py promises that both backends behave the same, so each contract test also runs on the
in-process backend; the Redis-only tests check what lives in Redis (keys, expiry, the index).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from proxy.cache.backend import CacheBackend, Entry, Tightened, Vector
from proxy.cache.bookkeeping import Batch, HitTally, Served
from proxy.cache.embedder import MINILM_DIM
from proxy.cache.memory import MemoryCacheBackend
from proxy.cache.redis_backend import RedisCacheBackend, schema_for
from proxy.runtime.redis_client import connect_redis

DIMS = 4


def unit(*values: float) -> Vector:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def entry(entry_id: str, *, scope: str = "s1", partition: str = "p1", owner: str = "sales",
          text_hash: str | None = None, hits: int = 0, cost: float = 0.001,
          created: float | None = None, ttl: float = 600.0, **more: Any) -> Entry:
    now = time.time() if created is None else created
    return Entry(id=entry_id, scope=scope, partition=partition, owner=owner,
                 department=owner, model="m", text=f"question {entry_id} — ünïcode ✓",
                 text_hash=text_hash or f"h-{entry_id}", response=b'{"object":"chat.completion"}',
                 cost=cost, created=now, expires_at=time.time() + ttl, ttl_seconds=ttl,
                 hits=hits, **more)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = connect_redis(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def redis_backend(client: aioredis.Redis, redis_prefix: str) -> RedisCacheBackend:
    backend = RedisCacheBackend(client, redis_prefix, DIMS, "flat")
    await backend.start()
    return backend


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "memory"])
def backend(request: pytest.FixtureRequest) -> CacheBackend:
    if request.param == "memory":
        return MemoryCacheBackend()
    found: RedisCacheBackend = request.getfixturevalue("redis_backend")
    return found


# -- the contract, on both backends --------------------------------------------------------

async def test_put_then_get_and_exact_lookup(backend: CacheBackend) -> None:
    stored = entry("a", task="faq", completion_tokens=9, cut_limit=20)
    assert await backend.put(stored, unit(1, 0, 0, 0), max_size=10) == 0
    assert await backend.get("a") == stored
    assert await backend.get_exact("s1", "h-a") == stored
    assert await backend.get_exact("s2", "h-a") is None
    assert await backend.get_exact("s1", "h-other") is None
    assert await backend.get("missing") is None


async def test_a_new_answer_for_the_same_question_replaces_the_old(backend: CacheBackend) -> None:
    await backend.put(entry("old", text_hash="same"), unit(1, 0, 0, 0), 10)
    await backend.put(entry("new", text_hash="same"), unit(1, 0, 0, 0), 10)
    found = await backend.get_exact("s1", "same")
    assert found is not None and found.id == "new"
    assert await backend.get("old") is None
    assert await backend.count() == 1


async def test_expired_entries_are_not_served(backend: CacheBackend) -> None:
    await backend.put(entry("gone", ttl=-1.0), unit(1, 0, 0, 0), 10)
    assert await backend.get("gone") is None
    assert await backend.get_exact("s1", "h-gone") is None
    assert await backend.search("s1", unit(1, 0, 0, 0), 4) == []


async def test_search_stays_in_its_scope_and_ranks_by_similarity(backend: CacheBackend) -> None:
    await backend.put(entry("near"), unit(1, 0.1, 0, 0), 10)
    await backend.put(entry("far"), unit(0, 1, 0, 0), 10)
    await backend.put(entry("other-scope", scope="s2"), unit(1, 0, 0, 0), 10)
    await backend.put(entry("no-vector"), None, 10)
    found = await backend.search("s1", unit(1, 0, 0, 0), 4)
    assert [e.id for e, _ in found] == ["near", "far"]
    assert found[0][1] == pytest.approx(float(unit(1, 0.1, 0, 0) @ unit(1, 0, 0, 0)), abs=1e-5)
    assert found[1][1] == pytest.approx(0.0, abs=1e-5)
    assert [e.id for e, _ in await backend.search("s1", unit(1, 0, 0, 0), 1)] == ["near"]
    assert await backend.search("nowhere", unit(1, 0, 0, 0), 4) == []


async def test_hit_counts_and_extends_expiry(backend: CacheBackend) -> None:
    stored = entry("a", ttl=60)
    await backend.put(stored, None, 10)
    later = time.time() + 3600
    await backend.hit(stored, later)
    await backend.hit(stored, later)
    again = await backend.get("a")
    assert again is not None and again.hits == 2
    assert again.expires_at == pytest.approx(later)


async def test_a_full_partition_evicts_the_least_valuable(backend: CacheBackend) -> None:
    await backend.put(entry("valuable", hits=5, cost=1.0, created=1.0), None, 20)
    for i in range(19):
        await backend.put(entry(f"e{i:02}", created=10.0 + i), None, 20)
    await backend.put(entry("other-partition", partition="p2", created=0.0), None, 20)
    # the 21st entry of p1 passes max_size 20: p1 drops to eviction_target(20) == 19
    evicted = await backend.put(entry("newest", created=100.0), None, 20)
    assert evicted == 2
    assert await backend.get("e00") is None and await backend.get("e01") is None
    for kept in ("valuable", "e02", "newest", "other-partition"):
        assert await backend.get(kept) is not None, kept
    assert await backend.count() == 20


@pytest.mark.redis
async def test_concurrent_puts_into_a_full_partition_run_one_eviction(
        redis_backend: RedisCacheBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """An eviction reads the whole partition (1,000 entries by default). Found by the memory
    soak (scripts/soak.py, 16 connections): every store that arrived while one ran started its
    own, so evictions came every ~15 requests instead of every ~110 and the proxy spent 54 % of
    its time reading the partition again."""
    for i in range(100):
        await redis_backend.put(entry(f"e{i:03}", created=float(i)), None, 100)
    reads = 0
    zrange = redis_backend._r.zrange

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await zrange(*args, **kwargs)

    monkeypatch.setattr(redis_backend._r, "zrange", counted)
    await asyncio.gather(*(redis_backend.put(entry(f"n{i}", created=200.0 + i), None, 100)
                           for i in range(10)))
    # one eviction, or two when the first ended (down to 95) before the last stores counted
    # the partition (95 + 9 > 100): not one per store (10 before)
    assert reads <= 2
    assert await redis_backend.count() <= 110  # stores during the eviction stay for now
    before = reads
    await redis_backend.put(entry("next", created=300.0), None, 100)
    count = await redis_backend.count()
    assert count <= 100 and reads <= before + 1  # the next store evicts what is left over


async def test_delete_counts_only_what_existed(backend: CacheBackend) -> None:
    await backend.put(entry("a"), None, 10)
    await backend.put(entry("b"), None, 10)
    assert await backend.delete(["a", "missing", "a"]) == 1
    assert await backend.get_exact("s1", "h-a") is None
    assert await backend.delete([]) == 0
    assert await backend.ids_where() == ["b"]


async def test_ids_where_count_and_top_filter_by_scope_and_owner(backend: CacheBackend) -> None:
    await backend.put(entry("a", owner="sales", scope="x", hits=1), None, 10)
    await backend.put(entry("b", owner="sales", scope="y", hits=7), None, 10)
    await backend.put(entry("c", owner="shared:team", scope="x", hits=3), None, 10)
    assert sorted(await backend.ids_where()) == ["a", "b", "c"]
    assert sorted(await backend.ids_where(scope="x")) == ["a", "c"]
    assert await backend.ids_where(owner="shared:team") == ["c"]
    assert await backend.ids_where(scope="x", owner="sales") == ["a"]
    assert (await backend.count(), await backend.count("sales"), await backend.count("no")) == (
        3, 2, 0)
    assert [e.id for e in await backend.top(None, 10)] == ["b", "c", "a"]
    assert [e.id for e in await backend.top("sales", 1)] == ["b"]


async def test_clear_removes_every_entry(backend: CacheBackend) -> None:
    for name in ("a", "b", "c"):
        await backend.put(entry(name), unit(1, 0, 0, 0), 10)
    assert await backend.clear() == 3
    assert await backend.count() == 0
    assert await backend.get_exact("s1", "h-a") is None
    assert await backend.search("s1", unit(1, 0, 0, 0), 4) == []
    assert await backend.clear() == 0


async def test_counters_add_up(backend: CacheBackend) -> None:
    assert await backend.counters() == {}
    await backend.incr({"req|hit:exact|d|m|": 1, "saved|exact|d|m|": 0.25})
    await backend.incr({"req|hit:exact|d|m|": 2, "saved|exact|d|m|": 0.5})
    assert await backend.counters() == {"req|hit:exact|d|m|": 3.0,
                                        "saved|exact|d|m|": pytest.approx(0.75)}


async def test_remember_recall_and_claim_a_report_once(backend: CacheBackend) -> None:
    served = {"entry_id": "e", "department": "sales", "partition": "p", "model": "m"}
    await backend.remember("req-1", served, 60)
    assert await backend.recall("req-1") == served
    assert await backend.recall("req-2") is None
    assert await backend.claim_report("req-1", 60) is True
    assert await backend.claim_report("req-1", 60) is False
    assert await backend.claim_report("req-2", 60) is True


async def test_tightened_thresholds(backend: CacheBackend) -> None:
    live = Tightened("p1", 0.97, time.time() + 60, "sales", "sales", "m")
    assert await backend.threshold("p1") is None
    await backend.set_threshold(live)
    await backend.set_threshold(Tightened("p2", 0.96, time.time() + 60, "eng", "eng", "m"))
    assert await backend.threshold("p1") == pytest.approx(0.97)
    assert sorted(t.partition for t in await backend.thresholds()) == ["p1", "p2"]
    assert live in await backend.thresholds()
    assert await backend.clear_thresholds() == 2
    assert await backend.thresholds() == [] and await backend.threshold("p1") is None
    assert await backend.clear_thresholds() == 0


async def test_expired_threshold_is_not_in_force(backend: CacheBackend) -> None:
    await backend.set_threshold(Tightened("p1", 0.97, time.time() - 1, "o", "d", "m"))
    assert await backend.threshold("p1") is None
    assert await backend.thresholds() == []


# -- Redis only ------------------------------------------------------------------------------

@pytest.mark.redis
async def test_start_is_idempotent_and_keeps_entries(redis_backend: RedisCacheBackend,
                                                     client: aioredis.Redis,
                                                     redis_prefix: str) -> None:
    await redis_backend.put(entry("a"), unit(1, 0, 0, 0), 10)
    again = RedisCacheBackend(client, redis_prefix, DIMS, "flat")
    await again.start()
    assert await again.count() == 1


@pytest.mark.redis
async def test_keys_live_under_the_prefix_and_expire_with_the_entry(
        redis_backend: RedisCacheBackend, client: aioredis.Redis, redis_prefix: str) -> None:
    began = time.monotonic()
    await redis_backend.put(entry("a", ttl=120), None, 10)
    ours = [k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")]
    assert f"{redis_prefix}cache:e:a" in ours
    assert f"{redis_prefix}cache:x:s1:h-a" in ours
    assert f"{redis_prefix}cache:p:p1" in ours
    for key in (f"{redis_prefix}cache:e:a", f"{redis_prefix}cache:x:s1:h-a"):
        ttl_ms = await client.pttl(key)
        # the entry's TTL less the time since it was put (a loaded machine takes seconds)
        assert 120_000 - (time.monotonic() - began) * 1000 - 1000 < ttl_ms <= 120_000, key


@pytest.mark.redis
async def test_report_claims_expire(redis_backend: RedisCacheBackend, client: aioredis.Redis,
                                    redis_prefix: str) -> None:
    assert await redis_backend.claim_report("r", 60.0) is True
    assert 59_000 < await client.pttl(f"{redis_prefix}cache:r:r:reported") <= 60_000
    assert await redis_backend.claim_report("z", 0.0) is True  # at least 1 ms, never forever
    assert await client.pttl(f"{redis_prefix}cache:r:z:reported") in (-2, 0, 1)


def test_schema_names_index_and_keys_under_the_prefix() -> None:
    schema = schema_for("t:x:", 384, "hnsw")
    assert schema.index.name == "t:x:cache-idx"
    assert schema.index.prefix == "t:x:cache:e:"
    vector = schema.fields["embedding"]
    assert vector.attrs.dims == 384
    assert set(schema.fields) == {"scope", "partition", "owner", "hits", "created", "embedding"}



@pytest.mark.redis
async def test_replicas_starting_together_share_one_index(redis_url: str,
                                                           redis_prefix: str) -> None:
    """Each replica checks for the index and creates it when missing: two doing that at once
    must both start (the loser of the race used to fail with 'Index already exists')."""
    clients = [connect_redis(redis_url) for _ in range(4)]
    try:
        backends = [RedisCacheBackend(c, redis_prefix, MINILM_DIM) for c in clients]
        await asyncio.gather(*(b.start() for b in backends))
        assert await backends[0].index.exists()
    finally:
        for client in clients:
            await client.aclose()


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name[8:]: value["calls"] for name, value in stats.items()}


@pytest.mark.redis
async def test_an_exact_lookup_is_one_round_trip_without_the_vector(
        redis_backend: RedisCacheBackend, client: aioredis.Redis) -> None:
    """GET + HGETALL were two round trips per hit, the second moving the embedding (1.5 KB for
    MiniLM) that an exact hit never uses: now one script call reads the pointer and the fields."""
    stored = entry("a", completion_tokens=9)
    await redis_backend.put(stored, unit(1, 0, 0, 0), max_size=10)
    await redis_backend.get_exact("s1", "h-a")  # loads the script once
    before = await command_calls(client)
    found = await redis_backend.get_exact("s1", "h-a")
    after = await command_calls(client)
    assert found == stored
    ran = {name: after[name] - before.get(name, 0) for name in after
           if after[name] != before.get(name, 0) and name != "info"}
    assert ran == {"evalsha": 1, "get": 1, "hmget": 1}


@pytest.mark.redis
async def test_exact_lookup_of_a_missing_entry_or_pointer_is_none(
        redis_backend: RedisCacheBackend, client: aioredis.Redis, redis_prefix: str) -> None:
    assert await redis_backend.get_exact("s1", "nothing") is None
    await client.set(f"{redis_prefix}cache:x:s1:dangling", "gone")  # its entry expired first
    assert await redis_backend.get_exact("s1", "dangling") is None


@pytest.mark.redis
async def test_a_hit_counted_after_its_entry_was_deleted_leaves_no_stray_hash(
        redis_backend: RedisCacheBackend, client: aioredis.Redis, redis_prefix: str) -> None:
    """Hit bookkeeping is written a few ms after the hit: the entry may be reported or purged
    by then. HINCRBY on the deleted hash left a half entry (hits, expires_at) in the index."""
    stored = entry("a")
    await redis_backend.put(stored, None, 10)
    await redis_backend.delete(["a"])
    await redis_backend.hit(stored, time.time() + 600)
    assert await client.exists(f"{redis_prefix}cache:e:a") == 0
    assert await redis_backend.count() == 0


@pytest.mark.redis
async def test_eviction_reads_only_what_it_ranks_entries_by(
        redis_backend: RedisCacheBackend, client: aioredis.Redis) -> None:
    """Eviction ranks by hits x cost, then age: it read every entry of the partition whole
    (HGETALL: answer and 1.5 KB vector each), a full partition of 1,000 on every 50th miss."""
    for i in range(20):
        await redis_backend.put(entry(f"e{i:02}", created=10.0 + i), unit(1, 0, 0, 0), 20)
    before = await command_calls(client)
    assert await redis_backend.put(entry("newest", created=100.0), unit(1, 0, 0, 0), 20) == 2
    after = await command_calls(client)
    assert after.get("hgetall", 0) == before.get("hgetall", 0)
    assert await redis_backend.get("e00") is None and await redis_backend.get("e02") is not None


@pytest.mark.redis
async def test_concurrent_puts_over_max_size_evict_once(
        redis_backend: RedisCacheBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every put that found the partition over max_size scanned and evicted it, all at once
    under load (64 concurrent misses: 196 entry reads per request in scripts/bench_hits.py).
    While one eviction of a partition runs, the other puts leave it to that one."""
    for i in range(20):
        await redis_backend.put(entry(f"e{i:02}", created=10.0 + i), None, 20)
    running = asyncio.Event()
    release = asyncio.Event()
    scans: list[str] = []
    evict_now = redis_backend._evict_now

    async def held_eviction(partition_key: str, max_size: int) -> int:
        scans.append(partition_key)
        running.set()
        await release.wait()
        return await evict_now(partition_key, max_size)

    monkeypatch.setattr(redis_backend, "_evict_now", held_eviction)
    first = asyncio.get_running_loop().create_task(
        redis_backend.put(entry("n0", created=100.0), None, 20))
    await running.wait()
    others = await asyncio.gather(*(redis_backend.put(entry(f"n{i}", created=100.0 + i),
                                                      None, 20) for i in range(1, 10)))
    assert others == [0] * 9 and len(scans) == 1  # they found it being evicted
    release.set()
    assert await first == 30 - 19  # the one eviction brings it to eviction_target(20)
    assert await redis_backend.count() == 19


@pytest.mark.redis
async def test_exact_lookups_waiting_together_share_one_round_trip(
        redis_backend: RedisCacheBackend, client: aioredis.Redis) -> None:
    """Each Redis call costs the proxy ~100 us of client CPU however small: lookups that are
    ready in the same turn of the event loop go out as one script call, each still getting
    its own answer (or None)."""
    for name in ("a", "b", "c"):
        await redis_backend.put(entry(name, scope="s-" + name), None, 10)
    await redis_backend.get_exact("s-a", "h-a")  # loads the script once
    before = await command_calls(client)
    found = await asyncio.gather(*(redis_backend.get_exact(scope, text_hash) for scope, text_hash
                                   in [("s-a", "h-a"), ("s-a", "h-b"), ("s-b", "h-b"),
                                       ("s-c", "h-c"), ("s-a", "h-a")]))
    after = await command_calls(client)
    assert [e.id if e else None for e in found] == ["a", None, "b", "c", "a"]
    assert after["evalsha"] - before["evalsha"] == 1


@pytest.mark.redis
async def test_a_failed_shared_lookup_fails_each_waiting_lookup() -> None:
    broken = RedisCacheBackend(connect_redis("redis://127.0.0.1:1"), "x:", DIMS, "flat")
    results = await asyncio.gather(broken.get_exact("s", "a"), broken.get_exact("s", "b"),
                                   return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ConnectionError", "ConnectionError"]


@pytest.mark.redis
async def test_a_bookkeeping_write_is_one_round_trip_and_survives_a_script_flush(
        redis_backend: RedisCacheBackend, client: aioredis.Redis) -> None:
    """redis-py asks SCRIPT EXISTS before every pipeline that holds a registered script: a
    second round trip per write. The hits go by EVALSHA; a Redis that lost the script loads it."""
    stored = entry("a")
    await redis_backend.put(stored, None, 10)
    await redis_backend.hit(stored, time.time() + 600)  # the script is loaded by now
    before = await command_calls(client)
    await redis_backend.hit(stored, time.time() + 600)
    after = await command_calls(client)
    assert after.get("script|exists", 0) == before.get("script|exists", 0)
    await client.script_flush()
    await redis_backend.book(Batch(hits={"a": HitTally(stored, 3, time.time() + 900)},
                                   counters={"n": 1}))
    again = await redis_backend.get("a")
    assert again is not None and again.hits == 5
    assert await redis_backend.counters() == {"n": 1.0}


@pytest.mark.redis
async def test_a_bookkeeping_batch_is_one_command_however_many_hits_and_served_records(
        redis_backend: RedisCacheBackend, client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py packs and parses every command in Python: a pipeline of HSET + PEXPIRE per
    served record and HINCRBYFLOAT per counter cost a Redis hit ~7 % of its proxy CPU. The whole
    batch is one script call; what it writes is unchanged."""
    a, b = entry("a"), entry("b", text_hash="h-b")
    for stored in (a, b):
        await redis_backend.put(stored, None, 10)
    packed: list[tuple[Any, ...]] = []
    pack = Connection.pack_command

    def counting_pack(self: Connection, *args: Any) -> Any:
        packed.append(args)
        return pack(self, *args)

    monkeypatch.setattr(Connection, "pack_command", counting_pack)
    later = time.time() + 900
    served = [Served(f"r{i}", {"entry_id": "a", "department": "sales", "model": "m"}, 60)
              for i in range(5)]
    served.append(Served("r-b", {"entry_id": "b", "department": "ops", "scope": "s1"}, 30))
    await redis_backend.book(Batch(hits={"a": HitTally(a, 5, later), "b": HitTally(b, 1, later)},
                                   counters={"n": 6, "saved": 0.25}, served=served))
    assert [args[0] for args in packed] == ["EVALSHA"]
    monkeypatch.undo()
    assert [(await redis_backend.get(i)).hits for i in ("a", "b")] == [5, 1]  # type: ignore[union-attr]
    assert await redis_backend.counters() == {"n": 6.0, "saved": 0.25}
    for record in served:
        assert await redis_backend.recall(record.request_id) == record.fields
    ttl_ms = [await client.pttl(f"{redis_backend._p}rs:{r}") for r in ("r0", "r-b")]
    assert 59_000 < ttl_ms[0] <= 60_000 and 29_000 < ttl_ms[1] <= 30_000


@pytest.mark.redis
async def test_an_exact_lookup_answers_each_key_with_one_string(
        redis_backend: RedisCacheBackend, redis_prefix: str) -> None:
    """redis-py's parser costs the proxy ~5 us per RESP element: the pointer and 18 fields as
    separate elements were ~100 us of a hit's CPU. A found entry is one JSON string, a missing
    one nil, and get_exact still reads every field back as stored."""
    stored = entry("a", completion_tokens=9, task="support")
    await redis_backend.put(stored, unit(1, 0, 0, 0), max_size=10)
    reply = await redis_backend._lookups._script(
        keys=[f"{redis_prefix}cache:x:s1:h-a", f"{redis_prefix}cache:x:s1:none"],
        args=[f"{redis_prefix}cache:e:"])
    assert isinstance(reply[0], bytes) and reply[1] is None
    assert await redis_backend.get_exact("s1", "h-a") == stored


@pytest.mark.redis
async def test_a_served_hit_is_remembered_with_one_command(
        redis_backend: RedisCacheBackend, client: aioredis.Redis) -> None:
    """A batch of served hits wrote each one as a hash (HSET) with a TTL (PEXPIRE): two Redis
    commands per hit of the ~5 an exact hit cost on Redis. One SET with PX now."""
    stored = entry("a")
    await redis_backend.put(stored, None, 10)
    fields = {"entry_id": "a", "department": "sales", "partition": "p1", "model": "m",
              "scope": "s1"}
    batch = Batch(hits={"a": HitTally(stored, 50, time.time() + 600)},
                  served=[Served(f"r{i}", fields, 60) for i in range(50)])
    await redis_backend.book(batch)  # loads the script once
    before = await command_calls(client)
    await redis_backend.book(Batch(hits={"a": HitTally(stored, 50, time.time() + 600)},
                                   served=[Served(f"q{i}", fields, 60) for i in range(50)]))
    after = await command_calls(client)
    ran = {name: after[name] - before.get(name, 0) for name in after
           if after[name] != before.get(name, 0) and name not in ("info", "evalsha")}
    assert ran.get("set") == 50 and "hset" in ran and ran["hset"] == 1  # the entry's expiry
    assert "pexpire" not in ran
    assert await redis_backend.recall("q7") == fields
    assert await redis_backend.recall("nobody") is None


@pytest.mark.redis
async def test_a_hit_remembered_by_the_previous_version_is_still_recalled(
        redis_backend: RedisCacheBackend, client: aioredis.Redis, redis_prefix: str) -> None:
    """During a rolling upgrade, a wrong-answer report may name a hit an older replica served:
    those were hashes at cache:r:<request id>."""
    fields = {"entry_id": "a", "department": "sales", "partition": "p1", "model": "m",
              "scope": "s1"}
    await client.hset(f"{redis_prefix}cache:r:old", mapping=fields)
    await client.pexpire(f"{redis_prefix}cache:r:old", 60_000)
    assert await redis_backend.recall("old") == fields
    await redis_backend.remember("new", fields, 60)
    assert await redis_backend.recall("new") == fields
    assert 59_000 < await client.pttl(f"{redis_prefix}cache:rs:new") <= 60_000
