"""State on a Redis Cluster (3 masters + 3 replicas from the Redis Stack binaries), the cache's
vector index on a Redis Stack of its own (REDIS_CACHE_URL), two real `meterline serve`
processes: budgets exact, keys and records shared, slot migration (ASK/MOVED) and the
failover of a master survived (issue 16, item 2; docs/scaling.md)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from proxy.runtime.redis_client import connect_cluster
from proxy.spend.budgets import SpendOptions
from proxy.spend.chargeback import build_chargeback
from proxy.spend.ledger import create_spend_store
from proxy.spend.pricing import PricingTable, to_nanos
from proxy.spend.redis_backend import RedisSpendBackend
from proxy.spend.rollups import DAY
from tests.runtime.test_replicas import ADMIN, ADMIN_KEY, departments, flood, new_key
from tests.spend_helpers import FakeClock, departments_config, make_record
from tests.support.processes import ProxyProcess, two_replicas
from tests.support.redis_cluster import RedisCluster
from tests.support.servers import ServerThread, make_config_dir

pytestmark = pytest.mark.redis
MIDNIGHT = 1_750_032_000.0  # 2025-06-16T00:00:00Z


@pytest.fixture
def on_cluster(mock_upstream: ServerThread, redis_cluster: RedisCluster, redis_url: str,
               redis_prefix: str, tmp_path: Path) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url, timeout_s=30, edits={
        "departments.yaml": departments(), "experiments.yaml": "experiments: {}\n",
        "cache.yaml": "enabled: true\nmode: exact\nbackend: redis\n", "keys.yaml": "keys: []\n"})
    env = {"REDIS_URL": redis_cluster.url, "MET_REDIS_CLUSTER": "1",
           "REDIS_CACHE_URL": redis_url, "MET_REDIS_PREFIX": redis_prefix,
           "MET_ADMIN_KEY": ADMIN_KEY, "MOCK_UPSTREAM_KEY": "sk-upstream-test",
           "MET_LOG_LEVEL": "warning"}
    with two_replicas(config_dir, tmp_path, env) as pair:
        yield pair


def spent(replica: ProxyProcess, department: str = "engineering") -> tuple[int, float]:
    budgets = httpx.get(replica.url + "/admin/budgets", headers=ADMIN, timeout=30).json()["data"]
    day = next(d for d in budgets if d["department"] == department)["budgets"][0]
    return to_nanos(day["spent_dollars"]), day["reserved_dollars"]


def charged(answers: list[httpx.Response]) -> int:
    return sum(to_nanos(float(r.headers["x-meterline-cost-usd"]))
               for r in answers if r.status_code == 200)


def chat(url: str, key: str, text: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini", "temperature": 0,
                            "messages": [{"role": "user", "content": text}]})


def test_state_lives_on_the_cluster_and_replicas_share_it(
        on_cluster: tuple[ProxyProcess, ProxyProcess], redis_cluster: RedisCluster,
        redis_url: str, redis_prefix: str) -> None:
    a, b = on_cluster
    ready = httpx.get(a.url + "/readyz").json()
    assert ready["checks"]["redis"] == "ok" and ready["checks"]["redis_cache"] == "ok"
    _, key = new_key(a, "engineering")
    answers = asyncio.run(flood([a.url, b.url], key, 500))
    assert {r.status_code for r in answers} == {200, 429}, {
        r.status_code: r.text for r in answers if r.status_code not in (200, 429)}
    total = charged(answers)
    assert total <= to_nanos(1.0)
    assert spent(a) == spent(b) == (total, 0)
    served = sum(r.status_code == 200 for r in answers)
    listing = httpx.get(b.url + "/admin/spend", params={"by": "key"}, headers=ADMIN).json()
    assert listing["requests"] == served  # every record, read back across slots
    # the cache's index is on the Redis Stack; the sales answer cached by A is a hit on B
    _, sales = new_key(b, "sales")
    question = f"cluster cache {uuid.uuid4().hex}"
    assert chat(a.url, sales, question).headers["x-meterline-cache"] == "miss"
    assert chat(b.url, sales, question).headers["x-meterline-cache"] == "hit-exact"
    stack = redis.Redis.from_url(redis_url)
    try:
        on_stack = [k.decode() for k in stack.scan_iter(match=f"{redis_prefix}*", count=1000)]
    finally:
        stack.close()
    assert on_stack and all(k.startswith(f"{redis_prefix}cache:") for k in on_stack)
    holding = [port for port in redis_cluster.masters()
               if redis_cluster.keys_on(port, f"{redis_prefix}*")]
    assert len(holding) == 3  # records, keys and two departments spread over every master


def test_records_and_rollups_are_written_per_slot_on_the_cluster(
        redis_cluster: RedisCluster, redis_prefix: str, pricing_table: PricingTable) -> None:
    """record.lua touches the time index and the rollups, which share one slot on a cluster
    (no CROSSSLOT); the record and its department index are written before it. Reports from
    rollups equal reports from the records, a re-sent record counts once, and records written
    before rollups existed are backfilled once."""

    async def run() -> None:
        client = connect_cluster(redis_cluster.url)
        clock = FakeClock(MIDNIGHT + 2 * DAY)
        store = create_spend_store(client, departments_config(eng={}, sales={}), pricing_table,
                                   options=SpendOptions(key_prefix=redis_prefix), clock=clock)
        backend = store.backend
        assert isinstance(backend, RedisSpendBackend) and backend._cluster
        old = [make_record(f"old{i}", MIDNIGHT + 97 * i, cost_nanos=1000 + i) for i in range(20)]
        for record in old:  # as a version without rollups wrote them
            await client.set(backend._record_key(record.request_id),
                             orjson.dumps(record.to_dict()))
            await client.zadd(f"{redis_prefix}rec:ts", {record.request_id: record.ts})
        for i in range(60):
            record = make_record(f"new{i}", MIDNIGHT + 1800 * i + 7,
                                 department=("eng", "sales", "admin")[i % 3],
                                 key_id=f"k{i % 4}", cost_nanos=10_000 + i)
            await store.add_record(record)
            if i % 10 == 0:
                await store.add_record(record)  # a backlog re-send: counted once
        added = await asyncio.gather(backend.backfill_rollups(batch=6),
                                     backend.backfill_rollups(batch=6))
        assert sum(added) == 20
        for start, end, department in [(MIDNIGHT, MIDNIGHT + 2 * DAY, None),
                                       (MIDNIGHT + 1234.5, MIDNIGHT + DAY + 17, "sales")]:
            records = await store.records(start, end, department)
            usage = await store.usage(start, end, department, "coarse", "d")
            assert sum(u.requests for u in usage) == len(records) > 0
            assert build_chargeback(usage) == build_chargeback(records)
        recent = await store.recent(MIDNIGHT, MIDNIGHT + 2 * DAY, "eng", 3)
        assert [r.request_id for r in recent] == ["new57", "new54", "new51"]
        await store.close()
        await client.aclose()

    asyncio.run(run())
    rollups = [port for port in redis_cluster.masters()
               if redis_cluster.keys_on(port, f"{redis_prefix}{{{redis_prefix}rec:ts}}:roll:*")]
    assert rollups == [redis_cluster.master_of(f"{redis_prefix}rec:ts")]


def test_a_script_waits_out_a_slow_slot_migration(redis_cluster: RedisCluster,
                                                   redis_prefix: str) -> None:
    """While a slot's keys are half moved, a script on two of them gets TRYAGAIN (one key here,
    one there). redis-py gives up after 16 tries (~0.4 s: "TTL exhausted") and the proxy turned
    that into a 500 (CI, slot migration under traffic); a migration that takes longer must be
    waited out. The script runs once: TRYAGAIN, ASK and MOVED mean it was not executed."""
    first, second = f"{redis_prefix}{{mig}}:a", f"{redis_prefix}{{mig}}:b"
    slot = redis_cluster.slot_of("mig")
    src = redis_cluster.master_of(first)
    dst = next(port for port in redis_cluster.masters() if port != src)
    ids = redis_cluster.masters()
    redis_cluster.cli("set", first, "1", port=src)
    redis_cluster.cli("set", second, "10", port=src)
    redis_cluster.cli("cluster", "setslot", str(slot), "importing", ids[src], port=dst)
    redis_cluster.cli("cluster", "setslot", str(slot), "migrating", ids[dst], port=src)
    redis_cluster.cli("migrate", "127.0.0.1", str(dst), "", "0", "5000", "keys", first, port=src)

    def finish() -> None:
        time.sleep(1.2)  # three times what redis-py waits before it gives up
        redis_cluster.cli("migrate", "127.0.0.1", str(dst), "", "0", "5000", "keys", second,
                          port=src)
        for port in ids:
            redis_cluster.cli("cluster", "setslot", str(slot), "node", ids[dst], port=port)

    async def run() -> int:
        client = connect_cluster(redis_cluster.url)
        try:
            return int(await client.eval(
                "return redis.call('incr', KEYS[1]) + redis.call('incr', KEYS[2])", 2,
                first, second))
        finally:
            await client.aclose()

    mover = threading.Thread(target=finish)
    mover.start()
    try:
        assert asyncio.run(run()) == 2 + 11
    finally:
        mover.join(30)
    assert redis_cluster.master_of(first) == dst
    assert redis_cluster.cli("mget", first, second, port=dst).split() == ["2", "11"]


def test_slot_migration_under_traffic_loses_nothing(
        on_cluster: tuple[ProxyProcess, ProxyProcess], redis_cluster: RedisCluster,
        redis_prefix: str) -> None:
    """Move the slot holding engineering's budget to another master while requests run: the
    clients must follow MOVED once it is handed over (and ASK if a request lands mid-move)."""
    a, b = on_cluster
    _, key = new_key(a, "engineering")
    slot = redis_cluster.slot_of("engineering")
    before = asyncio.run(flood([a.url, b.url], key, 40))
    owner = redis_cluster.master_of(f"{redis_prefix}{{engineering}}:resv")
    target = next(port for port in redis_cluster.masters() if port != owner)
    mover = threading.Thread(target=redis_cluster.move_slot, args=(slot, target, 0.05))
    mover.start()
    during = asyncio.run(flood([a.url, b.url], key, 120))
    mover.join(60)
    after = asyncio.run(flood([a.url, b.url], key, 40))
    assert redis_cluster.master_of(f"{redis_prefix}{{engineering}}:resv") == target
    statuses = {r.status_code for r in before + during + after}
    assert statuses <= {200, 429}, [r.text for r in during if r.status_code >= 500][:2]
    assert spent(a) == spent(b) == (charged(before + during + after), 0)


def test_failover_of_a_master_is_survived(
        on_cluster: tuple[ProxyProcess, ProxyProcess], redis_cluster: RedisCluster,
        redis_prefix: str) -> None:
    """Kill the master holding engineering's budget: while its replica is promoted, requests
    get an OpenAI-shaped 503 (spend fails closed) or succeed; afterwards they succeed, on the
    spend the replica holds."""
    a, b = on_cluster
    _, key = new_key(a, "engineering")
    first = asyncio.run(flood([a.url, b.url], key, 20))
    assert {r.status_code for r in first} == {200}
    time.sleep(0.5)  # replication is asynchronous: let the replica catch up before the crash
    owner = redis_cluster.master_of(f"{redis_prefix}{{engineering}}:resv")
    redis_cluster.kill(owner)
    outcomes: list[httpx.Response] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = chat(a.url, key, f"during failover {uuid.uuid4().hex}")
        outcomes.append(r)
        if r.status_code == 200 and len(outcomes) > 1:
            break
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        time.sleep(0.2)
    assert outcomes[-1].status_code == 200
    assert redis_cluster.master_of(f"{redis_prefix}{{engineering}}:resv") != owner
    second = asyncio.run(flood([a.url, b.url], key, 20))
    assert {r.status_code for r in second} == {200}
    served = first + [r for r in outcomes if r.status_code == 200] + second
    total, reserved = spent(b)
    assert reserved == 0
    assert total == charged(served)  # nothing written before the crash was lost
