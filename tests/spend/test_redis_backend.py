"""The Redis spend backend (proxy/spend/redis_backend.py) on a real Redis Stack: the admit script
decides exactly like `budgets.plan_admission` (its docstring promises the Lua mirrors it), holds
and settlements move the counters, notices and records, and what happens when Redis is gone.
Ledger-level behaviour on both backends is in tests/spend/test_ledger.py."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.runtime.redis_client import connect_redis
from proxy.spend.budgets import (
    AdmitPlan,
    BackendDown,
    BreakerPlan,
    Settlement,
    Window,
    plan_admission,
    window_at,
)
from proxy.spend.records import UsageRecord
from proxy.spend.redis_backend import RedisSpendBackend

pytestmark = pytest.mark.redis
RETENTION = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = connect_redis(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(client: aioredis.Redis, redis_prefix: str, clock: Clock) -> RedisSpendBackend:
    return RedisSpendBackend(client, prefix=redis_prefix, clock=clock,
                             retention_seconds=RETENTION, backlog_max_records=3)


def admit_plan(department: str, now: float, windows: tuple[Window, ...], *, rid: str = "r1",
               fixed: int = 1_000, per_token: float = 10.0, max_tokens: int = 100,
               min_tokens: int = 1, cap: bool = False, rpm: int | None = None,
               tpm: int | None = None, tokens: int = 0,
               breaker: BreakerPlan | None = None) -> AdmitPlan:
    return AdmitPlan(department, rid, now, now + 600, windows, fixed, per_token, max_tokens,
                     min_tokens, cap, rpm, tpm, tokens, breaker)


def record(request_id: str, ts: float, department: str = "eng", **more: object) -> UsageRecord:
    return UsageRecord(request_id=request_id, ts=ts, department=department, key_id="k1",
                       user="ann", endpoint="chat.completions", model_requested="m",
                       model_used="m", provider="openai", status=200, **more)  # type: ignore[arg-type]


# -- admission mirrors plan_admission --------------------------------------------------------

async def test_admit_decides_exactly_like_plan_admission(backend: RedisSpendBackend,
                                                         client: aioredis.Redis,
                                                         redis_prefix: str) -> None:
    rng = random.Random(20251205)
    now = time.time()
    prices = [0.0, 0.5, 3.3, 75.0, 150.0, 2_500.0, 15_000.0, 60_000.0, 0.075]
    seen: set[str] = set()
    for trial in range(300):
        department = f"d{trial}"
        periods = rng.sample(["hourly", "daily", "monthly"], rng.randint(1, 3))
        scale = rng.choice([10**4, 10**7, 10**10, 10**13])  # up to $10,000 in nano-dollars
        windows = tuple(window_at(p, now, rng.randint(0, scale)) for p in periods)  # type: ignore[arg-type]
        spent = [rng.randint(0, w.limit_nanos) for w in windows]
        reserved = rng.choice([0, 0, rng.randint(0, scale // 2)])
        plan = admit_plan(department, now, windows, rid=f"r{trial}",
                          fixed=rng.choice([0, 1, 500, 10**6]),
                          per_token=rng.choice(prices), max_tokens=rng.randint(1, 8_000),
                          min_tokens=rng.choice([1, 16, 256]), cap=rng.random() < 0.6)
        for window, used in zip(windows, spent, strict=True):
            await client.set(f"{redis_prefix}{{{department}}}:n:spent:{window.wid}", used)
        await client.set(f"{redis_prefix}{{{department}}}:n:resv:total", reserved)
        amount, capped, failing = plan_admission(plan, spent, reserved)
        outcome = await backend.admit(plan)
        expected = ("budget" if failing else "ok", amount, capped, failing)
        seen.add("budget" if failing else "capped" if capped is not None else "ok")
        assert (outcome.status, outcome.reserved_nanos, outcome.max_tokens,
                outcome.failing) == expected, (trial, plan, spent, reserved)
    assert seen == {"ok", "capped", "budget"}  # the draws reach every branch


async def test_an_admitted_request_is_held_until_settled(backend: RedisSpendBackend,
                                                         clock: Clock) -> None:
    now = clock.now
    windows = (window_at("daily", now, 10**9), window_at("monthly", now, 10**10))
    outcome = await backend.admit(admit_plan("eng", now, windows, rid="a"))
    assert (outcome.status, outcome.reserved_nanos) == ("ok", 2_000)
    assert await backend.window_state("eng", windows, now) == ([0, 0], 2_000)
    settled = await backend.commit(Settlement("eng", "a", 1_234, now, windows, None, 0,
                                              held_until=now + 600))
    assert settled is not None and settled.spent_nanos == (1_234, 1_234)
    assert settled.breaker_nanos is None
    assert await backend.window_state("eng", windows, now) == ([1_234, 1_234], 0)


async def test_expired_holds_do_not_count(backend: RedisSpendBackend, clock: Clock) -> None:
    now = clock.now
    windows = (window_at("daily", now, 10**9),)
    await backend.admit(admit_plan("eng", now, windows, rid="a"))
    assert (await backend.window_state("eng", windows, now + 601))[1] == 0
    # and the next admit purges them from the total
    later = await backend.admit(admit_plan("eng", now + 601, windows, rid="b"))
    assert later.status == "ok"
    assert (await backend.window_state("eng", windows, now + 601))[1] == 2_000


async def test_rpm_refusal_reports_when_to_retry(backend: RedisSpendBackend) -> None:
    minute_start = (time.time() // 60) * 60
    now = minute_start + 15  # a quarter into the minute, no previous minute
    for rid in ("a", "b"):
        assert (await backend.admit(admit_plan("eng", now, (), rid=rid, rpm=2))).status == "ok"
    refused = await backend.admit(admit_plan("eng", now, (), rid="c", rpm=2))
    assert refused.status == "rpm"
    assert refused.retry_after == pytest.approx(45.0)


async def test_tpm_counts_the_tokens_of_each_admission(backend: RedisSpendBackend) -> None:
    now = (time.time() // 60) * 60 + 30
    assert (await backend.admit(admit_plan("eng", now, (), tpm=100, tokens=60))).status == "ok"
    refused = await backend.admit(admit_plan("eng", now, (), rid="b", tpm=100, tokens=41))
    assert refused.status == "tpm" and refused.retry_after >= 1.0
    assert (await backend.admit(admit_plan("eng", now, (), rid="c", tpm=100,
                                           tokens=40))).status == "ok"


async def test_breaker_opens_over_its_ceiling_and_resume_clears_it(
        backend: RedisSpendBackend, clock: Clock) -> None:
    now = clock.now
    breaker = BreakerPlan(window_minutes=10, max_nanos=5_000)
    await backend.admit(admit_plan("eng", now, (), rid="a", breaker=breaker))
    outcome = await backend.commit(Settlement("eng", "a", 6_000, now, (), 10, 0))
    assert outcome is not None and outcome.breaker_nanos == 6_000
    assert await backend.breaker_spend("eng", now, 10) == 6_000
    refused = await backend.admit(admit_plan("eng", now, (), rid="b", breaker=breaker))
    assert refused.status == "breaker"
    assert 0 < refused.retry_after <= 600
    await backend.resume("eng")
    assert await backend.breaker_spend("eng", now, 10) == 0
    assert (await backend.admit(admit_plan("eng", now, (), rid="c", breaker=breaker))).status \
        == "ok"


async def test_departments_are_independent(backend: RedisSpendBackend, clock: Clock) -> None:
    now = clock.now
    windows = (window_at("daily", now, 2_000),)
    assert (await backend.admit(admit_plan("a", now, windows, rid="1"))).status == "ok"
    assert (await backend.admit(admit_plan("a", now, windows, rid="2"))).status == "budget"
    assert (await backend.admit(admit_plan("b", now, windows, rid="3"))).status == "ok"


# -- notices and records ---------------------------------------------------------------------

async def test_a_notice_is_claimed_once_until_released(backend: RedisSpendBackend,
                                                       client: aioredis.Redis,
                                                       redis_prefix: str) -> None:
    assert await backend.claim_notice("notice:eng:daily", 60) is True
    assert await backend.claim_notice("notice:eng:daily", 60) is False
    assert 0 < await client.ttl(f"{redis_prefix}notice:eng:daily") <= 60
    await backend.release_notice("notice:eng:daily")
    assert await backend.claim_notice("notice:eng:daily", 60) is True


async def test_records_round_trip_and_are_queried_by_time_and_department(
        backend: RedisSpendBackend, clock: Clock, client: aioredis.Redis,
        redis_prefix: str) -> None:
    t = clock.now
    first = record("req-1", t - 100, cost_nanos=5, extra={"note": "ünïcode ✓"})
    await backend.put_record(first)
    await backend.put_record(record("req-2", t - 50, "sales"))
    await backend.put_record(record("req-3", t, "eng"))
    assert await backend.get_record("req-1") == first
    assert await backend.get_record("missing") is None
    ids = [r.request_id for r in await backend.query_records(t - 100, t, None)]
    assert sorted(ids) == ["req-1", "req-2"]  # [from, to): t itself is excluded
    eng = await backend.query_records(t - 1000, t + 1, "eng")
    assert sorted(r.request_id for r in eng) == ["req-1", "req-3"]
    assert await backend.query_records(t - 1000, t + 1, "nobody") == []
    ttl = await client.ttl(f"{redis_prefix}rec:req-1")
    assert RETENTION - 5 < ttl <= RETENTION


class CountingScript:
    """Wraps a registered script and keeps its replies."""

    def __init__(self, script: object) -> None:
        self.script = script
        self.replies: list[bytes] = []

    async def __call__(self, **kwargs: object) -> bytes:
        reply: bytes = await self.script(**kwargs)  # type: ignore[operator]
        self.replies.append(reply)
        return reply


async def test_minute_costs_reads_again_only_the_hours_written_since(
        backend: RedisSpendBackend, clock: Clock) -> None:
    """The alerts read two days of department-minutes on every poll: an hour unchanged since
    the last read is not sent again, and a late record in a closed hour is still counted."""
    import orjson

    hour = int(clock.now // 3600 * 3600)
    past, current = hour - 3600, hour
    await backend.put_record(record("a", past + 60, cost_nanos=5))
    await backend.put_record(record("b", past + 61, "sales", cost_nanos=7))
    await backend.put_record(record("c", current + 1, cost_nanos=11))
    spy = CountingScript(backend._read_minutes)
    backend._read_minutes = spy  # type: ignore[assignment]
    first = await backend.minute_costs([past, current])
    assert sorted(first) == sorted([("eng", current, 11), ("eng", past + 60, 5),
                                    ("sales", past + 60, 7)])
    assert sorted(await backend.minute_costs([past, current])) == sorted(first)
    assert orjson.loads(spy.replies[-1]) == [0, 0]  # neither hour sent again
    await backend.put_record(record("late", past + 62, cost_nanos=100))  # a late batch
    third = await backend.minute_costs([past, current])
    assert sorted(third) == sorted([("eng", current, 11), ("eng", past + 60, 105),
                                    ("sales", past + 60, 7)])
    sent = orjson.loads(spy.replies[-1])
    assert sent[0] != 0 and sent[1] == 0  # only the hour written since


async def test_minute_costs_of_an_hour_written_before_change_counts(
        backend: RedisSpendBackend, clock: Clock, client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An hour written by a version without change counts gets one at its first read, expiring
    with the hour; what a replica of that version adds later (a rolling upgrade) shows within
    MINUTES_HELD_S. The count is a key of its own: the cost hash stays as that version reads it."""
    from proxy.spend import redis_reads

    hour = int(clock.now // 3600 * 3600)
    key, counts = backend._minute_key(hour, "d"), backend._minute_key(hour, "v")
    await client.hset(key, mapping={f"eng\x1f{hour}": 5})
    await client.expire(key, 600)
    assert await backend.minute_costs([hour]) == [("eng", hour, 5)]
    assert await client.hget(counts, "n") == b"0"
    assert 0 < await client.ttl(counts) <= 600  # expires with the hour's hash
    assert await backend.minute_costs([hour + 3600]) == []  # no hash: no count made
    assert not await client.exists(backend._minute_key(hour + 3600, "v"))
    await client.hincrby(key, f"eng\x1f{hour}", 2)  # an old replica adds, without a count
    assert await backend.minute_costs([hour]) == [("eng", hour, 5)]  # held ...
    monkeypatch.setattr(redis_reads, "MINUTES_HELD_S", 0.0)
    assert await backend.minute_costs([hour]) == [("eng", hour, 7)]  # ... for a bounded time
    await backend.put_record(record("new", hour + 1, cost_nanos=1))  # this version counts
    monkeypatch.setattr(redis_reads, "MINUTES_HELD_S", 300.0)
    assert await backend.minute_costs([hour]) == [("eng", hour, 8)]
    assert await client.hkeys(key) == [f"eng\x1f{hour}".encode()]  # nothing else in the hash


async def test_records_past_retention_leave_the_time_index(backend: RedisSpendBackend,
                                                           clock: Clock) -> None:
    await backend.put_record(record("old", clock.now - RETENTION - 10))
    await backend.put_record(record("new", clock.now))
    found = await backend.query_records(0, clock.now + 1, None)
    assert [r.request_id for r in found] == ["new"]


async def test_feedback_updates_the_record_and_keeps_its_expiry(backend: RedisSpendBackend,
                                                                clock: Clock,
                                                                client: aioredis.Redis,
                                                                redis_prefix: str) -> None:
    await backend.put_record(record("r", clock.now, extra={"a": 1}))
    assert await backend.set_feedback("r", 0.25, "wrong — try again") is True
    got = await backend.get_record("r")
    assert got is not None and got.quality_score == 0.25
    assert got.extra == {"a": 1, "feedback_comment": "wrong — try again"}
    assert await client.ttl(f"{redis_prefix}rec:r") > 0
    assert await backend.set_feedback("r", 1.0, None) is True
    again = await backend.get_record("r")
    assert again is not None and again.quality_score == 1.0
    assert again.extra["feedback_comment"] == "wrong — try again"
    assert await backend.set_feedback("missing", 1.0, None) is False


# -- Redis unreachable -----------------------------------------------------------------------

@pytest.fixture
async def down(clock: Clock) -> AsyncIterator[RedisSpendBackend]:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
    yield RedisSpendBackend(client, prefix="t:down:", clock=clock, retention_seconds=RETENTION,
                            backlog_max_records=3)
    await client.aclose()


async def test_reads_and_admission_raise_backend_down(down: RedisSpendBackend,
                                                      clock: Clock) -> None:
    windows = (window_at("daily", clock.now, 10**9),)
    with pytest.raises(BackendDown):
        await down.admit(admit_plan("eng", clock.now, windows))
    with pytest.raises(BackendDown):
        await down.window_state("eng", windows, clock.now)
    with pytest.raises(BackendDown):
        await down.claim_notice("n", 60)
    with pytest.raises(BackendDown):
        await down.get_record("r")


async def test_writes_are_queued_and_the_record_backlog_is_bounded(down: RedisSpendBackend,
                                                                   clock: Clock) -> None:
    windows = (window_at("daily", clock.now, 10**9),)
    assert await down.commit(Settlement("eng", "a", 10, clock.now, windows, None, 0)) is None
    for i in range(5):
        await down.put_record(record(f"r{i}", clock.now))
    assert down.backlog_size() == 1 + 3
    assert down.dropped_records == 2
    assert await down.flush() == 0  # still down: nothing written, nothing lost
    assert down.backlog_size() == 4
