"""Review reproductions for the leases change (proxy/spend/leases.py, lua/lease.lua)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from proxy.spend.budgets import BackendDown, BudgetExhausted
from proxy.spend.leases import LeasedRedisBackend
from proxy.spend.ledger import Ledger
from proxy.spend.pricing import to_nanos
from tests.spend_helpers import FakeClock, StoreFactory, usd

pytestmark = [pytest.mark.redis, pytest.mark.parametrize("spend_backend", ["redis"])]


def backend_of(store: Ledger) -> LeasedRedisBackend:
    assert isinstance(store.backend, LeasedRedisBackend)
    return store.backend


async def spent_and_reserved(store: Ledger, department: str = "eng") -> tuple[int, int]:
    status = (await store.budget_status(department))[0]
    return to_nanos(status.spent_dollars), to_nanos(status.reserved_dollars)


async def refused(pending: Any) -> Any:
    pending.close()
    raise BackendDown("connection refused")


async def reserve_all(store: Ledger, tokens: int, limit: int = 200) -> int:
    """Reserve gpt-4o requests of `tokens` output tokens until refused; the nanos admitted."""
    total = 0
    for _ in range(limit):
        try:
            res = await store.reserve("eng", "gpt-4o", 0, tokens)
        except BudgetExhausted:
            break
        total += res.reserved_nanos
    return total


def test_a_lease_that_expired_in_redis_is_not_revived_without_room(
        make_spend_store: StoreFactory) -> None:
    """Replica A holds a lease, then cannot reach Redis for longer than the lease TTL (network
    partition, a paused VM). Its lease expires in Redis and replica B, as designed, spends the
    room it freed. When A is back, its next lease call sends keep = held + its old free slice and
    lease.lua sets the lease to that without a room check: A admits against money B spent."""
    async def run() -> None:
        clock = FakeClock()
        depts = {"eng": {"budgets": {"daily": 1}}}
        a = make_spend_store(depts, clock=clock, lease_ttl_seconds=30)
        b = make_spend_store(depts, clock=clock, lease_ttl_seconds=30)
        ba = backend_of(a)
        held = []
        for _ in range(8):
            held.append(await a.reserve("eng", "gpt-4o", 0, 2_000))  # $0.02 each
            await asyncio.sleep(0.002)
        for res in held:
            await a.settle(res, usd(0.02))
        await a.flush()
        assert ba._departments["eng"].free > usd(0.05)  # A leases a free slice
        real = ba._call
        ba._call = refused  # type: ignore[method-assign]  # A is cut off from Redis
        clock.advance(31)  # past A's lease TTL: Redis lets B have that room
        by_b = await reserve_all(b, 2_000)
        ba._call = real  # type: ignore[method-assign]  # A is back
        by_a = await reserve_all(a, 2_000)
        spent, reserved = await spent_and_reserved(b)
        print("spent", spent, "reserved", reserved, "by_b", by_b, "by_a", by_a)
        assert usd(0.16) + by_b + by_a <= usd(1)  # what both replicas admitted fits the budget
        assert spent + reserved <= usd(1)
        await a.close()
        await b.close()

    asyncio.run(run())


@pytest.mark.parametrize("leases", [False, True])
def test_a_budget_lowered_by_a_reload_refuses_at_once(make_spend_store: StoreFactory,
                                                      leases: bool) -> None:
    """Admission checked only the local lease, not the windows' new limits, so a budget lowered
    by a reload was not enforced while the lease lasted. $0.16 spent of a $1 daily budget,
    then a reload lowers it to $0.10: the next request is refused (as with MET_SPEND_LEASES=0),
    not admitted against the lease leased under $1."""
    async def run() -> None:
        from tests.spend_helpers import departments_config

        store = make_spend_store({"eng": {"budgets": {"daily": 1}}}, leases=leases)
        held = []
        for _ in range(8):
            held.append(await store.reserve("eng", "gpt-4o", 0, 2_000))  # $0.02 each
            await asyncio.sleep(0.002)
        for res in held:
            await store.settle(res, usd(0.02))
        await store.flush()
        store.reconfigure(departments_config(eng={"budgets": {"daily": 0.1}}), store.pricing,
                          None)
        admitted = await reserve_all(store, 2_000, limit=20)
        await store.close()
        assert admitted == 0, admitted

    asyncio.run(run())


@pytest.mark.parametrize("leases", [False, True])
def test_every_departments_spent_keys_expire(make_spend_store: StoreFactory,
                                             redis_prefix: str, leases: bool) -> None:
    """The first lease call (an admission) ran before the spent key existed (EXPIRE did
    nothing) and the TTL was remembered per window id, not per department: the keys never
    expired."""
    async def run() -> None:
        clock = FakeClock()
        store = make_spend_store({"eng": {"budgets": {"daily": 1}},
                                  "ops": {"budgets": {"daily": 1}}}, clock=clock, leases=leases)
        for name in ("eng", "ops"):
            await store.settle(await store.reserve(name, "gpt-4o-mini", 10, 10), 1_000)
            await store.flush()
        client = store.backend.client  # type: ignore[attr-defined]
        day = int(clock() // 86_400)
        ttls = {name: await client.ttl(f"{redis_prefix}{{{name}}}:n:spent:d{day}")
                for name in ("eng", "ops")}
        await store.close()
        assert all(ttl > 0 for ttl in ttls.values()), ttls

    asyncio.run(run())


@pytest.mark.parametrize("leases", [False, True])
def test_a_breaker_tripped_by_another_replica_stops_this_one(make_spend_store: StoreFactory,
                                                             leases: bool) -> None:
    """A department with only a circuit breaker was admitted against the breaker sum of this
    replica's last lease call, however old: a replica that made no call since another one
    tripped the breaker admitted every request until one of them settled."""
    async def run() -> None:
        from proxy.spend.budgets import CircuitOpen

        depts = {"eng": {"circuit_breaker": {"window_minutes": 10, "max_dollars": 1}}}
        clock = FakeClock()
        a = make_spend_store(depts, clock=clock, leases=leases)
        b = make_spend_store(depts, clock=clock, leases=leases)
        await a.settle(await a.reserve("eng", "gpt-4o-mini", 10, 10), usd(0.01))
        await a.flush()  # A knows the breaker's sum: $0.01
        await asyncio.sleep(0.3)  # then A is idle a moment (longer than the lease horizon)
        await b.settle(await b.reserve("eng", "gpt-4o-mini", 10, 10), usd(1.5))
        await b.flush()  # B trips it: $1.51 in the window
        with pytest.raises(CircuitOpen):
            await b.reserve("eng", "gpt-4o-mini", 10, 10)
        admitted = 0
        for _ in range(50):  # a burst on A, each request still in flight
            try:
                await a.reserve("eng", "gpt-4o-mini", 10, 10)
            except CircuitOpen:
                continue
            admitted += 1
        await a.close()
        await b.close()
        assert admitted == 0, admitted

    asyncio.run(run())


def test_an_outage_is_retried_and_logged_about_once_a_second(
        make_spend_store: StoreFactory, caplog: pytest.LogCaptureFixture) -> None:
    """While Redis was unreachable the flusher retried (and logged) every flush window, 10 ms:
    186 attempts and warnings in a second, against once a second before leases."""
    async def run() -> None:
        import logging
        import time

        from tests.spend_helpers import make_record

        store = make_spend_store({"eng": {"budgets": {"daily": 1}}}, clock=time.time)
        backend = backend_of(store)
        real = backend._call
        attempts = [0]

        async def down(pending: Any) -> Any:
            attempts[0] += 1
            return await refused(pending)

        res = await store.reserve("eng", "gpt-4o-mini", 10, 10)
        backend._call = down  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="proxy.spend.leases"):
            await store.settle(res, 1_000, make_record("a", time.time(), cost_nanos=1_000))
            await asyncio.sleep(1.0)
        backend._call = real  # type: ignore[method-assign]
        await store.close()
        warnings = len([r for r in caplog.records if r.name == "proxy.spend.leases"])
        print("attempts", attempts[0], "warnings", warnings)
        assert attempts[0] <= 10 and warnings <= 10, (attempts[0], warnings)

    asyncio.run(run())


def test_records_survive_a_redis_error_other_than_unreachable(
        make_spend_store: StoreFactory) -> None:
    """_flush_records put a batch back only on BackendDown: any other Redis error (OOM,
    READONLY after a failover) dropped the whole batch, up to 256 records, with one log line."""
    async def run() -> None:
        from tests.spend_helpers import T0, make_record

        store = make_spend_store({"eng": {}})
        client = backend_of(store).client
        await store.add_record(make_record("warm", T0, cost_nanos=1))
        await store.flush()
        old = (await client.config_get("maxmemory"))["maxmemory"]
        await client.config_set("maxmemory", "1")  # every write: OOM command not allowed
        try:
            for i in range(5):
                await store.add_record(make_record(f"r{i}", T0 + i, cost_nanos=10))
            with contextlib.suppress(Exception):
                await store.flush()
        finally:
            await client.config_set("maxmemory", old)
        await store.flush()
        found = len(await store.records(T0, T0 + 10))
        await store.close()
        assert found == 6, found

    asyncio.run(run())


def test_a_record_redis_refuses_alone_does_not_block_the_others(
        make_spend_store: StoreFactory, redis_prefix: str) -> None:
    """A record Redis always refuses (here its department index has the wrong type) is dropped,
    counted, after its batch failed a few times; the records queued with it are written."""
    async def run() -> None:
        from tests.spend_helpers import T0, make_record

        store = make_spend_store({"eng": {}, "bad": {}})
        backend = backend_of(store)
        await backend.client.set(f"{redis_prefix}rec:ts:bad", "x")  # WRONGTYPE for its ZADD
        await store.add_record(make_record("poison", T0, department="bad", cost_nanos=1))
        for i in range(3):
            await store.add_record(make_record(f"r{i}", T0 + i, cost_nanos=10))
        for _ in range(6):
            with contextlib.suppress(Exception):
                await store.flush()
        found = {r.request_id for r in await store.records(T0, T0 + 10, "eng")}
        dropped, queued = backend.dropped_records, len(backend._records)
        await store.close()
        assert (found, dropped, queued) == ({"r0", "r1", "r2"}, 1, 0)

    asyncio.run(run())


def test_one_departments_redis_error_does_not_stop_the_others(
        make_spend_store: StoreFactory, redis_prefix: str) -> None:
    """flush() caught only BackendDown per department: a lease call that failed otherwise (here
    WRONGTYPE on one department's key) aborted the flush every window, so no department after
    it was ever written."""
    async def run() -> None:
        clock = FakeClock()
        store = make_spend_store({"aaa": {"budgets": {"daily": 1}},
                                  "eng": {"budgets": {"daily": 1}}}, clock=clock)
        client = backend_of(store).client
        day = int(clock() // 86_400)
        await client.hset(f"{redis_prefix}{{aaa}}:n:spent:d{day}", "x", "1")  # a bad key
        with contextlib.suppress(Exception):  # aaa's lease call fails on its bad key
            await store.reserve("aaa", "gpt-4o-mini", 10, 10)
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), 1_000)
        for _ in range(3):
            with contextlib.suppress(Exception):
                await store.flush()
        spent = int(await client.get(f"{redis_prefix}{{eng}}:n:spent:d{day}") or 0)
        with contextlib.suppress(Exception):
            await store.close()
        assert spent == 1_000, spent

    asyncio.run(run())


@pytest.mark.parametrize("leases", [False, True])
def test_holds_of_requests_in_flight_outlive_a_short_outage(make_spend_store: StoreFactory,
                                                            leases: bool) -> None:
    """A request's hold lived in its replica's lease, which expires after the lease TTL (30 s),
    not after the reservation TTL (10 min): a replica cut off from Redis longer than that lost
    its holds in Redis, others spent the room, then its requests settled ($1.50 on $1)."""
    async def run() -> None:
        clock = FakeClock()
        depts = {"eng": {"budgets": {"daily": 1}}}
        a = make_spend_store(depts, clock=clock, leases=leases)
        b = make_spend_store(depts, clock=clock, leases=leases)
        backend = a.backend
        in_flight = [await a.reserve("eng", "gpt-4o", 0, 10_000) for _ in range(5)]  # $0.50
        await a.flush()
        real = backend._call  # type: ignore[attr-defined]
        backend._call = refused  # type: ignore[attr-defined]  # A is cut off for 40 s
        clock.advance(40)
        by_b = await reserve_all(b, 10_000)
        backend._call = real  # type: ignore[attr-defined]
        for res in in_flight:  # A's long requests finish and are charged their worst case
            await a.settle(res, res.reserved_nanos)
        await a.flush()
        spent, _ = await spent_and_reserved(b)
        await a.close()
        await b.close()
        assert spent + by_b <= usd(1), (spent, by_b)

    asyncio.run(run())


def test_replicas_that_stopped_leave_nothing_in_the_lease_hash(
        make_spend_store: StoreFactory, redis_prefix: str) -> None:
    """lease.lua wrote <lease id>:held and :seq to n:lease and nothing removed them: every
    replica that ever ran left two fields, and live replicas refreshed the hash's TTL, so it
    grew with every restart. Now a stopped replica's seq key expires ten minutes after it."""
    async def run() -> None:
        import time

        depts = {"eng": {"budgets": {"daily": 1}}}
        for _ in range(5):  # five restarts of a replica
            store = make_spend_store(depts, clock=time.time)
            await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), 1_000)
            await store.close()
        other = make_spend_store(depts, clock=time.time)
        client = backend_of(other).client
        fields = await client.hkeys(f"{redis_prefix}{{eng}}:n:lease")
        seqs = [key async for key in client.scan_iter(f"{redis_prefix}{{eng}}:n:lease:*")]
        ttls = [await client.ttl(key) for key in seqs]
        await other.close()
        assert len(fields) == 0, fields
        assert len(seqs) == 5 and all(0 < ttl <= 600 for ttl in ttls), ttls  # then gone

    asyncio.run(run())


@pytest.mark.parametrize("leases", [False, True])
def test_a_big_request_is_not_refused_by_small_ones_sharing_the_lease(
        make_spend_store: StoreFactory, leases: bool) -> None:
    """A request the lease can't cover asked Redis only for its need beyond the lease's free
    part, but requests admitted locally while that call was out used the free part: it was
    then refused as over budget (and an "exhausted" notice sent) with $100 nearly untouched."""
    async def run() -> None:
        import time

        store = make_spend_store({"eng": {"budgets": {"daily": 100}}}, clock=time.time,
                                 leases=leases)
        first = await store.reserve("eng", "gpt-4o", 0, 5_000)  # $0.05
        await store.settle(first, 0)  # its $0.05 stays free in the lease
        await asyncio.sleep(0.12)  # not idle yet (0.2 s): the lease keeps its free part
        big = store.reserve("eng", "gpt-4o", 0, 10_000)  # $0.10: asks Redis for $0.05 more
        small = [store.reserve("eng", "gpt-4o", 0, 1_000) for _ in range(5)]  # $0.01 each
        results = await asyncio.gather(big, *small, return_exceptions=True)
        await store.close()
        refused = [r for r in results if isinstance(r, BudgetExhausted)]
        assert not refused, results

    asyncio.run(run())


def test_a_lease_call_does_not_shorten_the_life_of_per_request_holds(
        make_spend_store: StoreFactory, redis_prefix: str) -> None:
    """lease.lua set the reservation keys' TTL to the lease TTL + 60 s (90 s), shortening the
    reservation TTL + 60 s (660 s) admit.lua set for a per-request replica's hold: in a mixed
    fleet (rolling upgrade) that hold could vanish with its keys while its request ran."""
    async def run() -> None:
        import time

        depts = {"eng": {"budgets": {"daily": 10}}}
        per_request = make_spend_store(depts, clock=time.time, leases=False)
        leasing = make_spend_store(depts, clock=time.time)
        await per_request.reserve("eng", "gpt-4o", 0, 10_000)  # held for up to 600 s
        await leasing.settle(await leasing.reserve("eng", "gpt-4o-mini", 10, 10), 1_000)
        await leasing.flush()
        client = backend_of(leasing).client
        ttls = [await client.ttl(f"{redis_prefix}{{eng}}:n:resv{suffix}")
                for suffix in ("", ":amt", ":total")]
        await per_request.close()
        await leasing.close()
        assert min(ttls) >= 600, ttls

    asyncio.run(run())
