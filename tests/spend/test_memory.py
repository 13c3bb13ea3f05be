"""The embedded backend keeps a running total of holds; it must equal a full recount. Its raw
records are bounded in memory and read back exactly as they were put."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
import tracemalloc

import orjson

from proxy.spend.budgets import AdmitPlan, Settlement, window_at
from proxy.spend.memory import MemorySpendBackend
from proxy.spend.records import UsageRecord, packed_ts
from proxy.spend.rollups import arm_sums
from tests.spend_helpers import (
    expected_rollups,
    make_record,
    moment_values,
    random_records,
    read_rollups,
)

T0 = 1_750_000_000.0


def plan(rid: str, now: float, ttl: float, tokens: int) -> AdmitPlan:
    return AdmitPlan(
        department="eng", reservation_id=rid, now=now, expires_at=now + ttl,
        windows=(window_at("daily", now, 10**15),), fixed_nanos=7, per_token_nanos=1.5,
        max_tokens=tokens, min_tokens=1, cap=False, rpm=None, tpm=None, tokens=0, breaker=None,
    )  # fmt: skip


def expected_held(holds: dict[str, tuple[int, float]], now: float) -> int:
    return sum(amount for amount, expires in holds.values() if expires > now)


def test_held_total_matches_a_recount_over_random_admits_settles_and_expiries() -> None:
    async def run() -> None:
        rng = random.Random(7)
        now = T0
        backend = MemorySpendBackend(clock=lambda: now, max_records=10, retention_seconds=1e9)
        holds: dict[str, tuple[int, float]] = {}
        for i in range(3000):
            now += rng.choice((0.0, 0.5, 3.0, 40.0))
            action = rng.random()
            if action < 0.55 or not holds:
                ttl = rng.choice((5.0, 60.0, 600.0))
                outcome = await backend.admit(plan(f"r{i}", now, ttl, rng.randint(0, 5000)))
                assert outcome.status == "ok"
                holds[f"r{i}"] = (outcome.reserved_nanos, now + ttl)
            elif action < 0.9:
                rid = rng.choice(sorted(holds))
                window = window_at("daily", now, 10**15)
                await backend.commit(Settlement("eng", rid, 1, now, (window,), None, 0))
                del holds[rid]
            holds = {r: h for r, h in holds.items() if h[1] > now}
            _, reserved = await backend.window_state("eng", (), now)
            assert reserved == expected_held(holds, now)

    asyncio.run(run())


def test_old_windows_and_rate_minutes_are_still_forgotten() -> None:
    async def run() -> None:
        backend = MemorySpendBackend(clock=lambda: T0, max_records=10, retention_seconds=1e9)

        async def settle(rid: str, now: float) -> None:
            outcome = await backend.admit(AdmitPlan(
                department="eng", reservation_id=rid, now=now, expires_at=now + 600,
                windows=(), fixed_nanos=0, per_token_nanos=0.0, max_tokens=1, min_tokens=1,
                cap=False, rpm=100, tpm=None, tokens=5, breaker=None))
            assert outcome.status == "ok"
            window = window_at("hourly", now, 10**9)
            await backend.commit(Settlement("eng", rid, 3, now, (window,), None, 0))

        await settle("a", T0)
        await settle("b", T0 + 1)
        assert await backend.window_state("eng", (window_at("hourly", T0),), T0 + 1) == ([6], 0)
        later = T0 + 2 * 86_400
        await settle("c", later)
        rate_minutes = {key[2] for key in backend._rates}
        assert rate_minutes <= {int(later // 60), int(later // 60) - 1}
        assert await backend.window_state("eng", (window_at("hourly", T0),), later) == ([0], 0)

    asyncio.run(run())


def soak_record(n: int) -> UsageRecord:
    """A record as the gateway makes one for the soak's requests: config strings shared, the
    body's model and user parsed afresh (scripts/record_memory.py measures 100,000 of them)."""
    body = orjson.loads(b'{"model":"gpt-4o-mini","user":"soak"}')
    return UsageRecord(
        request_id="req_" + secrets.token_hex(16), ts=T0 + n / 1000, department="eng",
        key_id="bench", user=body["user"], endpoint="chat.completions",
        model_requested=body["model"], model_used=body["model"], provider="openai", status=200,
        input_tokens=17 + n % 7, output_tokens=40 + n % 24, cost_nanos=26_550 + 600 * (n % 24),
        cache="miss", latency_ms=3.0 + (n % 97) / 10, ttft_ms=1.5 if n % 4 == 3 else None,
        stream=n % 4 == 3)


def test_a_kept_record_takes_under_450_bytes() -> None:
    """100,000 kept records (the default bound) were ~70 MB as record objects (~700 bytes
    each: the embedded soak's RSS climbed by that much, docs/performance.md)."""
    async def run() -> float:
        backend = MemorySpendBackend(clock=lambda: T0, max_records=30_000,
                                     retention_seconds=1e9)
        for n in range(2_000):  # the rollups' buckets and groups exist after these
            await backend.put_record(soak_record(n))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(2_000, 22_000):
                await backend.put_record(soak_record(n))
            return (tracemalloc.get_traced_memory()[0] - before) / 20_000
        finally:
            tracemalloc.stop()

    assert asyncio.run(run()) < 450


def test_records_read_back_exactly_as_they_were_put() -> None:
    async def run() -> None:
        backend = MemorySpendBackend(clock=lambda: T0, max_records=10, retention_seconds=1e9)
        full = make_record(
            "full", T0 + 1.25, user="ann \u00e9", input_tokens=12, cached_input_tokens=3,
            output_tokens=7, cost_nanos=10**15 + 1, cost_estimated=True, saved_nanos=5,
            cache="hit-semantic", priced=False, route_rule="cheap", task="code",
            experiment="exp", variant="b", latency_ms=12.5, ttft_ms=3.0, stream=True,
            error="stream_cut", quality_score=0.5, client_request_id="c-1",
            extra={"synthetic": True, "n": [1, 2.5, None]})
        plain = make_record("plain", T0)  # ts an int, every other field at its default
        plain.ts = 1_750_000_000
        for record in (full, plain):
            await backend.put_record(record)
        as_put = [orjson.dumps(r.to_dict()) for r in (plain, full)]  # types too: 0 is not 0.0
        got = await backend.query_records(T0, T0 + 2, None)
        assert [orjson.dumps(r.to_dict()) for r in got] == as_put
        recent = await backend.recent_records(T0, T0 + 2, "eng", 10)
        assert [orjson.dumps(r.to_dict()) for r in recent] == as_put[::-1]
        one = await backend.get_record("full")
        assert one == full and one is not full
        one.extra["synthetic"] = False  # a read record is the caller's copy
        assert (await backend.get_record("full")) == full
        assert await backend.query_records(T0 + 1, T0 + 2, "other") == []

    asyncio.run(run())


def test_feedback_keeps_a_record_in_its_place_for_the_bound() -> None:
    async def run() -> None:
        backend = MemorySpendBackend(clock=lambda: T0, max_records=2, retention_seconds=1e9)
        await backend.put_record(make_record("a", T0))
        await backend.put_record(make_record("b", T0 + 1))
        assert await backend.set_feedback("a", 0.9, "good")
        await backend.put_record(make_record("c", T0 + 2))  # drops the oldest put: a
        assert await backend.get_record("a") is None
        await backend.put_record(make_record("b", T0 + 1, output_tokens=9))  # put again: newest
        await backend.put_record(make_record("d", T0 + 3))
        assert [r.request_id for r in await backend.query_records(0, T0 + 9, None)] == ["b", "d"]
        b = await backend.get_record("b")
        assert b is not None and b.output_tokens == 9
        assert await backend.set_feedback("d", 0.25, None)
        d = await backend.get_record("d")
        assert d is not None and (d.quality_score, d.extra) == (0.25, {})

    asyncio.run(run())


def test_rollups_gathered_and_rolled_at_once_equal_each_record_rolled_on_its_own() -> None:
    """Records are rolled up a key at a time, when read or when enough have gathered: every
    rollup, arm sum and minute cost read must equal adding the records one by one, whether the
    read comes after a few records, in the middle of a gathering, or after many."""

    async def run(seed: int) -> None:
        rng = random.Random(seed)
        records = random_records(rng, 1500)
        backend = MemorySpendBackend(clock=lambda: T0 + 3 * 86_400, max_records=100_000,
                                     retention_seconds=1e9)
        stops = sorted(rng.sample(range(1, len(records)), 4)) + [len(records)]
        done = 0
        for stop in stops:
            for record in records[done:stop]:
                await backend.put_record(record)
            done = stop
            assert await read_rollups(backend) == expected_rollups(records[:done])

    for seed in range(3):
        asyncio.run(run(seed))


def test_feedback_on_a_record_not_rolled_up_yet_counts_once() -> None:
    async def run() -> None:
        backend = MemorySpendBackend(clock=lambda: T0, max_records=100, retention_seconds=1e9)
        record = make_record("f1", T0, quality_score=None, latency_ms=2.0)
        await backend.put_record(record)
        assert await backend.set_feedback("f1", 0.5, None)
        rated = await backend.get_record("f1")
        assert rated is not None
        arms = await backend.arm_rollups([("h", int(T0 // 3600) * 3600)])
        assert [moment_values(a.sums) for a in arms] == [moment_values(arm_sums(rated))]

    asyncio.run(run())


def test_a_packed_record_unpacks_equal_with_every_field_set() -> None:
    """packed() writes every field but the request id, in the constructor's order: a record with
    no field at its default comes back equal (the store keeps records only packed)."""
    record = UsageRecord(
        "req_packed", 1_765_000_000.25, "eng", "key-1", "ann", "chat.completions", "gpt-4o",
        "gpt-4o-mini", "openai", 429, 11, 3, 7, 12_345, True, 678, "hit-exact", False, "cheap",
        "support", "exp", "b", 12.5, 3.25, True, "rate_limited", 0.5, "client-1",
        {"cache_judge": "same"})
    defaults = UsageRecord("req_packed", 0.0, "", "", None, "", "", "", "", 0)
    assert all(getattr(record, f.name) != getattr(defaults, f.name)
               for f in dataclasses.fields(UsageRecord) if f.name != "request_id")
    packed = record.packed()
    assert packed_ts(packed) == record.ts
    assert UsageRecord.unpacked("req_packed", packed) == record
