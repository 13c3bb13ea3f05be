"""Budgets, rate limits, breaker and usage records: one suite, run on memory and on Redis."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pytest

from proxy.spend.budgets import (
    BackendDown,
    BudgetExhausted,
    CircuitOpen,
    DepartmentRateLimited,
    SpendBackendUnavailable,
    window_at,
)
from proxy.spend.ledger import Ledger
from proxy.spend.pricing import PricingTable, to_nanos
from proxy.spend.redis_backend import RedisSpendBackend
from tests.spend_helpers import (
    T0,
    FakeClock,
    StoreFactory,
    TcpSwitch,
    departments_config,
    make_record,
    usd,
)

DAY_END = 1_750_032_000.0  # midnight UTC after T0
HOUR_END = 1_750_003_200.0


async def spent_and_reserved(store: Ledger, department: str = "eng") -> tuple[float, float]:
    status = await store.budget_status(department)
    return status[0].spent_dollars, status[0].reserved_dollars


def test_settle_adds_actual_cost_and_frees_the_hold(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1}}})
        res = await store.reserve("eng", "gpt-4o", prompt_tokens=1000, max_tokens=1000)
        assert res.reserved_nanos == (1000 * 2.5 + 1000 * 10) * 1000
        assert await spent_and_reserved(store) == (0.0, 0.0125)
        await store.settle(res, usd(0.004))
        await store.settle(res, usd(0.004))  # idempotent
        assert await spent_and_reserved(store) == (0.004, 0.0)
        await store.close()

    asyncio.run(run())


# memory, Redis with leases and Redis without (each admission a script call)
ON_EVERY_BACKEND = pytest.mark.parametrize(
    ("spend_backend", "leases"),
    [("memory", True), pytest.param("redis", True, marks=pytest.mark.redis),
     pytest.param("redis", False, marks=pytest.mark.redis)],
    indirect=["spend_backend"],
)


@ON_EVERY_BACKEND
def test_release_frees_the_hold_charges_nothing_and_keeps_the_rate_counted(
    make_spend_store: StoreFactory, leases: bool
) -> None:
    """A cache hit releases its reservation: in process (memory, Redis leases) the hold is just
    dropped, without Redis leases the settle script frees it. Either way nothing is spent, the
    request still counts against rpm/tpm, and a settlement after the release changes nothing."""
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1}, "rpm": 2, "tpm": 10_000,
                                          "circuit_breaker": {"window_minutes": 5,
                                                              "max_dollars": 0.5}}},
                                 leases=leases)
        res = await store.reserve("eng", "gpt-4o", prompt_tokens=1000, max_tokens=1000)
        assert await spent_and_reserved(store) == (0.0, 0.0125)
        await store.release(res)
        await store.release(res)
        await store.settle(res, usd(0.004))  # already settled: not charged
        assert res.settled
        assert await spent_and_reserved(store) == (0.0, 0.0)
        assert not await store.is_paused("eng")
        await store.reserve("eng", "gpt-4o", prompt_tokens=10, max_tokens=10)
        with pytest.raises(DepartmentRateLimited) as info:  # the released request still counts
            await store.reserve("eng", "gpt-4o", prompt_tokens=10, max_tokens=10)
        assert info.value.limit == "rpm"
        await store.close()

    asyncio.run(run())


@ON_EVERY_BACKEND
def test_a_free_admission_holds_nothing_counts_the_rate_and_needs_an_unspent_budget(
    make_spend_store: StoreFactory, leases: bool
) -> None:
    """admit_free (a cache hit): admitted where no upstream call's worst case fits, holding
    nothing (without Redis leases the script's one-nano hold is freed at once), counted
    against rpm; refused once the budget is spent."""
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 0.01}, "rpm": 3,
                                          "cap_max_tokens": False},
                                  "ops": {"budgets": {"daily": 0.01}}}, leases=leases)
        res = await store.reserve("eng", "gpt-4o", prompt_tokens=0, max_tokens=900)
        await store.settle(res, usd(0.0095))
        with pytest.raises(BudgetExhausted):  # $0.009 of output does not fit $0.0005
            await store.reserve("eng", "gpt-4o", prompt_tokens=0, max_tokens=900)
        await store.admit_free("eng", prompt_tokens=50)
        assert await spent_and_reserved(store) == (0.0095, 0.0)
        await store.admit_free("eng", prompt_tokens=50)
        with pytest.raises(DepartmentRateLimited) as info:  # 1 + 2 free = the rpm of 3
            await store.admit_free("eng", prompt_tokens=50)
        assert info.value.limit == "rpm"

        res = await store.reserve("ops", "gpt-4o", prompt_tokens=0, max_tokens=900)
        await store.settle(res, usd(0.01))  # all of it
        with pytest.raises(BudgetExhausted):
            await store.admit_free("ops", prompt_tokens=50)
        assert await spent_and_reserved(store, "ops") == (0.01, 0.0)
        await store.close()

    asyncio.run(run())


def test_settle_with_a_record_stores_it_and_returns_the_budget_left(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"hourly": 2, "daily": 1}, "tpm": 1000}})
        res = await store.reserve("eng", "gpt-4o-mini", prompt_tokens=900, max_tokens=10)
        record = make_record("r1", T0, cost=0.25, input_tokens=100, output_tokens=50)
        assert await store.settle(res, usd(0.25), record) == 0.75  # daily is the tightest
        assert await store.get_record("r1") == record
        await store.reserve("eng", "gpt-4o-mini", prompt_tokens=800)  # tpm corrected to 150
        with pytest.raises(TypeError, match="nano-dollars"):
            await store.settle(res, 0.25)  # type: ignore[arg-type]
        await store.close()

    asyncio.run(run())


def test_exhausted_budget_reports_the_period_and_seconds_to_reset(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1, "monthly": 100}}})
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(1.0))
        with pytest.raises(BudgetExhausted) as info:
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        assert (info.value.period, info.value.retry_after) == ("daily", DAY_END - T0)
        assert (info.value.status, info.value.code) == (429, "insufficient_quota")
        assert info.value.headers == {"Retry-After": str(int(DAY_END - T0))}
        await store.close()

    asyncio.run(run())


def test_when_several_periods_are_exhausted_the_latest_reset_is_reported(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"hourly": 0.5, "daily": 0.5}}})
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(0.5))
        with pytest.raises(BudgetExhausted) as info:
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        assert info.value.period == "daily"
        assert info.value.retry_after == DAY_END - T0
        await store.close()

    asyncio.run(run())


def test_hourly_budget_resets_with_the_next_hour(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        clock = FakeClock()
        store = make_spend_store({"eng": {"budgets": {"hourly": 0.5, "daily": 5}}}, clock=clock)
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(0.5))
        with pytest.raises(BudgetExhausted) as info:
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        assert (info.value.period, info.value.retry_after) == ("hourly", HOUR_END - T0)
        clock.now = HOUR_END
        await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await store.close()

    asyncio.run(run())


def test_open_reservations_count_against_the_budget_and_expire(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        clock = FakeClock()
        store = make_spend_store({"eng": {"budgets": {"daily": 1}}}, clock=clock)
        first = await store.reserve("eng", "gpt-4o", 0, 60_000)  # $0.60 worst case
        with pytest.raises(BudgetExhausted):
            await store.reserve("eng", "gpt-4o", 0, 60_000)
        await store.settle(first, usd(0.1))
        held = await store.reserve("eng", "gpt-4o", 0, 60_000)  # 0.1 spent + 0.6 held
        assert held.reserved_dollars == 0.6
        clock.advance(601)  # the replica holding `held` died: its reservation expires
        await store.reserve("eng", "gpt-4o", 0, 60_000)
        await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("spent", "cap", "expected"),
    [
        (0.99, True, 975),  # $0.01 left: 250,000 nanos of prompt + 975 tokens x 10,000
        (0.99, False, None),  # no capping: refused
        (0.9995, True, None),  # only 25 tokens would fit, below min_capped_tokens=64
    ],
)
def test_cap_max_tokens_shrinks_the_request_to_fit(
    make_spend_store: StoreFactory, spent: float, cap: bool, expected: int | None
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1}, "cap_max_tokens": cap}})
        await store.settle(await store.reserve("eng", "gpt-4o", 0, 1), usd(spent))
        if expected is None:
            with pytest.raises(BudgetExhausted):
                await store.reserve("eng", "gpt-4o", 100, 4000)
        else:
            res = await store.reserve("eng", "gpt-4o", 100, 4000)
            assert (res.max_tokens, res.capped, res.reserved_nanos) == (expected, True, 10_000_000)
        await store.close()

    asyncio.run(run())


def test_default_max_tokens_is_the_worst_case_when_the_request_has_none(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"default_max_tokens": 2000}})
        res = await store.reserve("eng", "gpt-4o", 0)
        assert (res.reserved_nanos, res.max_tokens) == (20_000_000, None)
        await store.close()

    asyncio.run(run())


def test_rpm_uses_a_sliding_window_with_retry_after(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        clock = FakeClock()  # 40 s into a minute
        store = make_spend_store({"eng": {"rpm": 3}}, clock=clock)
        for _ in range(3):
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        with pytest.raises(DepartmentRateLimited) as info:
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        assert (info.value.limit, info.value.retry_after) == ("rpm", 20)
        clock.advance(20)  # new minute, but the previous one still weighs 3 x 100 %
        with pytest.raises(DepartmentRateLimited) as info:
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        assert info.value.retry_after == 20  # until the previous minute weighs <= 2
        clock.advance(21)
        await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await store.close()

    asyncio.run(run())


def test_tpm_counts_prompt_tokens_then_corrects_at_settle(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"tpm": 1000}})
        first = await store.reserve("eng", "gpt-4o-mini", 600, 10)
        with pytest.raises(DepartmentRateLimited) as info:
            await store.reserve("eng", "gpt-4o-mini", 600, 10)
        assert info.value.limit == "tpm"
        await store.settle(first, 0, total_tokens=300)  # the real request was smaller
        await store.reserve("eng", "gpt-4o-mini", 600, 10)
        await store.close()

    asyncio.run(run())


def test_circuit_breaker_pauses_until_spend_leaves_the_window(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        clock = FakeClock()
        breaker = {"window_minutes": 10, "max_dollars": 1}
        store = make_spend_store({"eng": {"circuit_breaker": breaker}}, clock=clock)
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(0.9))
        assert not await store.is_paused("eng")
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(0.6))
        assert await store.is_paused("eng")
        with pytest.raises(CircuitOpen) as info:
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        assert info.value.retry_after == 560  # the minute bucket leaves the 10-minute window
        assert info.value.code == "circuit_breaker_open"
        clock.advance(560)
        assert not await store.is_paused("eng")
        await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await store.close()

    asyncio.run(run())


def test_admin_resume_clears_the_breaker_for_every_replica(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        breaker = {"window_minutes": 10, "max_dollars": 1}
        store = make_spend_store({"eng": {"circuit_breaker": breaker}})
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(2.0))
        with pytest.raises(CircuitOpen):
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await store.resume("eng")
        assert not await store.is_paused("eng")
        await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await store.close()

    asyncio.run(run())


def test_usage_records_round_trip_with_feedback_and_queries(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {}, "sales": {}})
        await store.add_record(make_record("a", T0, cost=0.25))
        await store.add_record(make_record("b", T0 + 10, cost=0.5, user=None, key_id="k2"))
        await store.add_record(make_record("c", T0 + 20, department="sales", cost=1.0))
        got = await store.get_record("b")
        assert got is not None and (got.cost, got.user, got.key_id) == (0.5, None, "k2")
        assert await store.get_record("missing") is None
        assert await store.set_feedback("a", 0.8, "good answer")
        assert not await store.set_feedback("missing", 1.0)
        updated = await store.get_record("a")
        assert updated is not None and updated.quality_score == 0.8
        assert updated.extra == {"feedback_comment": "good answer"}
        assert [r.request_id for r in await store.records(T0, T0 + 20)] == ["a", "b"]
        assert [r.request_id for r in await store.records(T0, T0 + 30, "sales")] == ["c"]
        assert await store.spend_by("department", T0, T0 + 30) == {"eng": 0.75, "sales": 1.0}
        assert await store.spend_by("key", T0, T0 + 30, "eng") == {"k1": 0.25, "k2": 0.5}
        assert await store.spend_by("user", T0, T0 + 30) == {"(none)": 0.5, "ann": 1.25}
        assert await store.spend_by("model", T0, T0 + 30) == {"gpt-4o-mini": 1.75}
        await store.close()

    asyncio.run(run())


def test_records_survive_a_restart_on_redis_and_are_bounded_in_memory(
    make_spend_store: StoreFactory, spend_backend: str
) -> None:
    async def run() -> None:
        first = make_spend_store({"eng": {}}, max_memory_records=2)
        for i in range(3):
            await first.add_record(make_record(f"r{i}", T0 + i))
        await first.close()
        if spend_backend == "memory":
            assert [r.request_id for r in await first.records(0, T0 + 9)] == ["r1", "r2"]
            return
        second = make_spend_store({"eng": {}})
        assert [r.request_id for r in await second.records(0, T0 + 9)] == ["r0", "r1", "r2"]
        await second.close()

    asyncio.run(run())


def test_concurrent_reservations_never_overspend(make_spend_store: StoreFactory) -> None:
    """1,000 concurrent reserve/settle against a $1 daily budget (real clock, real Redis)."""

    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1}}}, clock=time.time)
        worst = 15_000 + 3_000_000  # 100 prompt x $0.15/1M + 5000 output x $0.60/1M, in nanos
        rng = random.Random(5)
        plans = [(rng.random() * 0.01, rng.randint(worst // 2, worst)) for _ in range(1000)]

        async def one(delay: float, actual: int) -> int:
            try:
                res = await store.reserve("eng", "gpt-4o-mini", 100, 5000)
            except BudgetExhausted:
                return -1
            assert res.reserved_nanos == worst
            await asyncio.sleep(delay)
            await store.settle(res, actual)
            return actual

        results = await asyncio.gather(*(one(d, a) for d, a in plans))
        settled = sum(r for r in results if r >= 0)
        spent, reserved = await spent_and_reserved(store)
        assert results.count(-1) > 0  # the budget really was the limit
        assert to_nanos(spent) == settled  # no lost or double settlements
        assert settled <= 1_000_000_000 + worst
        assert reserved == 0.0
        await store.close()

    asyncio.run(run())


def test_unknown_department_is_a_lookup_error(make_spend_store: StoreFactory) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {}})
        with pytest.raises(KeyError, match="unknown department 'nope'"):
            await store.reserve("nope", "gpt-4o", 1, 1)
        await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("period", "moment", "ends"),
    [
        ("hourly", "2025-06-15T15:06:40", "2025-06-15T16:00:00"),
        ("daily", "2025-06-15T23:59:59", "2025-06-16T00:00:00"),
        ("monthly", "2025-02-10T00:00:00", "2025-03-01T00:00:00"),
        ("monthly", "2025-12-31T23:00:00", "2026-01-01T00:00:00"),
    ],
)
def test_windows_are_utc_calendar_periods(period: str, moment: str, ends: str) -> None:
    def ts(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    assert window_at(period, ts(moment)).ends_at == ts(ends)  # type: ignore[arg-type]


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_redis_outage_queues_spend_and_records_then_flushes(
    make_spend_store: StoreFactory, redis_url: str, fail_mode: str
) -> None:
    async def run() -> None:
        parsed = urlparse(redis_url)
        switch = TcpSwitch(parsed.hostname or "127.0.0.1", parsed.port or 6379)
        await switch.up()
        store = make_spend_store(
            {"eng": {"budgets": {"daily": 10}}},
            redis_url=f"redis://127.0.0.1:{switch.port}",
            fail_mode=fail_mode,
            redis_timeout_seconds=0.5,
        )
        before = await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await switch.down()
        if fail_mode == "closed":
            with pytest.raises(SpendBackendUnavailable) as info:
                await store.reserve("eng", "gpt-4o-mini", 10, 10)
            assert info.value.status == 503
        else:
            degraded = await store.reserve("eng", "gpt-4o-mini", 10, 10)
            assert degraded.degraded
            await store.settle(degraded, usd(0.5))
        await store.settle(before, usd(0.25))
        await store.add_record(make_record("lost?", T0, cost=0.25))
        queued = store.backlog_size()
        assert queued == (2 if fail_mode == "closed" else 3)
        assert await store.flush() == 0 and store.backlog_size() == queued
        await switch.up()
        assert await store.flush() == queued
        assert store.backlog_size() == 0
        spent, _ = await spent_and_reserved(store)
        assert spent == (0.25 if fail_mode == "closed" else 0.75)
        assert await store.get_record("lost?") is not None
        await store.close()
        await switch.down()

    asyncio.run(run())


def test_a_reload_changes_the_breaker_ceiling_for_the_next_request(
    make_spend_store: StoreFactory,
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {"circuit_breaker": {"window_minutes": 10,
                                                               "max_dollars": 1}}})
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 10, 10), usd(2.0))
        with pytest.raises(CircuitOpen):
            await store.reserve("eng", "gpt-4o-mini", 10, 10)
        raised = departments_config(eng={"circuit_breaker": {"window_minutes": 10,
                                                             "max_dollars": 5}})
        store.reconfigure(raised, store.pricing, None)
        await store.reserve("eng", "gpt-4o-mini", 10, 10)  # 2 spent, ceiling now 5
        store.reconfigure(departments_config(eng={}), store.pricing, None)
        await store.reserve("eng", "gpt-4o-mini", 10, 10)  # no breaker at all
        await store.close()

    asyncio.run(run())


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])
def test_a_settlement_whose_reply_was_lost_is_not_counted_twice(
    make_spend_store: StoreFactory,
) -> None:
    """Redis ran the settle script but the connection broke before its reply: the settlement is
    queued, and flushing the queue must not add the spend a second time. One that Redis never
    got (its hold is still there) is still counted when the queue flushes."""
    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 10}}})
        backend = store.backend
        assert isinstance(backend, RedisSpendBackend)
        answered = await store.reserve("eng", "gpt-4o-mini", 10, 10)
        never_sent = await store.reserve("eng", "gpt-4o-mini", 10, 10)
        real_call = backend._call

        async def reply_lost(pending: Any) -> Any:
            await real_call(pending)  # Redis runs the script...
            raise BackendDown("connection reset")  # ...and the reply never arrives

        async def refused(pending: Any) -> Any:
            pending.close()  # the coroutine never runs: Redis never got it
            raise BackendDown("connection refused")

        backend._call = reply_lost  # type: ignore[method-assign]
        await store.settle(answered, usd(0.25))
        backend._call = refused  # type: ignore[method-assign]
        await store.settle(never_sent, usd(0.5))
        backend._call = real_call  # type: ignore[method-assign]
        assert store.backlog_size() == 2
        assert await store.flush() == 2
        spent, reserved = await spent_and_reserved(store)
        assert spent == pytest.approx(0.75)  # 0.25 once, not 0.5; and the 0.5 Redis never saw
        assert reserved == 0
        await store.close()

    asyncio.run(run())


def test_10000_small_embedding_calls_sum_to_their_exact_cost(
    make_spend_store: StoreFactory, pricing_table: PricingTable
) -> None:
    """10 tokens of text-embedding-3-small cost $0.0000002: rounded per request to whole
    nano-dollars that was $0; 10,000 of them are $0.002 in the budget and the chargeback."""

    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1}}})
        cost = pricing_table.cost("text-embedding-3-small", {"prompt_tokens": 10})
        for i in range(10_000):
            res = await store.reserve("eng", "text-embedding-3-small", 10, 0)
            record = make_record(f"e{i}", T0, model_used="text-embedding-3-small",
                                 input_tokens=10, cost_nanos=cost.nanos)
            await store.settle(res, cost.nanos, record)
        assert (await store.budget_status("eng"))[0].spent_dollars == 0.002
        report = await store.chargeback(T0, T0 + 1)
        assert (report.total.requests, report.total.cost_nanos) == (10_000, 2_000_000)
        await store.close()

    asyncio.run(run())


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])  # a Redis key schema or upgrade
def test_micro_dollar_counters_of_older_versions_are_read_and_folded(
    make_spend_store: StoreFactory, spend_backend: str
) -> None:
    """Budget and breaker counters written in micro-dollars (keys without the `n:` unit) keep
    counting after the upgrade: read x 1000, then folded into the nano-dollar keys."""

    async def run() -> None:
        store = make_spend_store({"eng": {"budgets": {"daily": 1},
                                          "circuit_breaker": {"window_minutes": 5,
                                                              "max_dollars": 0.5}}})
        backend = store.backend
        assert isinstance(backend, RedisSpendBackend)
        legacy = f"{backend.prefix}{{eng}}:spent:{window_at('daily', T0).wid}"
        await backend.client.set(legacy, 400_000, ex=3600)  # $0.40 in micro-dollars
        await backend.client.hset(f"{backend.prefix}{{eng}}:cb", str(int(T0 // 60)), 400_000)
        await backend.client.set(f"{backend.prefix}{{eng}}:resv:total", 100_000, ex=600)
        assert await spent_and_reserved(store) == (0.4, 0.1)
        assert await backend.breaker_spend("eng", T0, 5) == 400_000_000
        res = await store.reserve("eng", "gpt-4o-mini", 10, 10)
        await store.settle(res, usd(0.000000001) + 200_000_000)  # $0.2 and one nano-dollar
        status = await store.budget_status("eng")
        assert status[0].spent_dollars == 0.600000001
        assert await backend.client.exists(legacy, f"{backend.prefix}{{eng}}:cb") == 0
        assert 0 < await backend.client.ttl(
            f"{backend.prefix}{{eng}}:n:spent:{window_at('daily', T0).wid}")
        assert await store.is_paused("eng")  # 0.4 folded + 0.2 > 0.5 ceiling
        await store.close()

    asyncio.run(run())
