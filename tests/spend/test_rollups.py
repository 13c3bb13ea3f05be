"""Rollups: a report read from hour/day rollups equals the same report from every record."""

from __future__ import annotations

import asyncio
import math
import random

import orjson
import pytest

from proxy.routing.experiment_stats import recommend, recommend_arms, summarize, summarize_arms
from proxy.routing.rules import RoutingRules
from proxy.spend.chargeback import build_chargeback
from proxy.spend.daily import daily_series, daily_series_arms
from proxy.spend.ledger import Ledger
from proxy.spend.records import UsageRecord
from proxy.spend.redis_backend import RedisSpendBackend
from proxy.spend.rollups import ARM_HEAD, DAY, HOUR, Plan, Slice, plan_range
from tests.spend_helpers import FakeClock, StoreFactory, make_record

MIDNIGHT = 1_750_032_000.0  # 2025-06-16T00:00:00Z


def by_value(usage: list[Slice], field: str) -> dict[str | None, tuple[int, int]]:
    totals: dict[str | None, tuple[int, int]] = {}
    for part in usage:
        requests, nanos = totals.get(getattr(part, field), (0, 0))
        totals[getattr(part, field)] = (requests + part.requests, nanos + part.cost_nanos)
    return totals


def test_a_range_is_covered_by_days_hours_and_raw_edges() -> None:
    now = MIDNIGHT + 2 * DAY + 5 * HOUR + 60
    plan = plan_range(MIDNIGHT - HOUR - 30, now + 1, now)
    assert plan == Plan(  # today is a whole day: no record is newer than now
        days=(int(MIDNIGHT), int(MIDNIGHT + DAY), int(MIDNIGHT + 2 * DAY)),
        hours=(int(MIDNIGHT - HOUR),),
        raw=((MIDNIGHT - HOUR - 30, MIDNIGHT - HOUR),))
    june, july = 1_748_736_000, 1_751_328_000  # 2025-06-01, 2025-07-01 UTC
    assert plan_range(june - DAY, july + HOUR, july + DAY) == Plan(
        (int(june - DAY),), (int(july),), (), (june,))
    assert plan_range(MIDNIGHT, now - 30, now) == Plan(  # today up to half a minute ago
        (int(MIDNIGHT), int(MIDNIGHT + DAY)),
        tuple(int(MIDNIGHT + 2 * DAY + h * HOUR) for h in range(5)),
        ((MIDNIGHT + 2 * DAY + 5 * HOUR, now - 30),))
    # a `to` in the past inside an hour: that hour is read from the records
    assert plan_range(MIDNIGHT, MIDNIGHT + HOUR + 5, now) == Plan(
        (), (int(MIDNIGHT),), ((MIDNIGHT + HOUR, MIDNIGHT + HOUR + 5),))
    assert plan_range(now + 10, now + 20, now) == Plan((), (), ((now + 10, now + 20),))


def test_reports_from_rollups_equal_reports_from_records(make_spend_store: StoreFactory) -> None:
    """3 days of random records on both backends; odd edges; a record re-sent is counted once."""

    async def run() -> None:
        clock = FakeClock(MIDNIGHT + 3 * DAY)
        store: Ledger = make_spend_store({"eng": {}, "sales": {}}, clock=clock)
        rng = random.Random(3)
        for i in range(600):
            record = make_record(
                f"r{i}", MIDNIGHT - DAY / 2 + rng.uniform(0, 3 * DAY),
                department=rng.choice(["eng", "sales", ""]), key_id=rng.choice(["k1", "k2"]),
                user=rng.choice([None, "ann", "bob"]), model_used=rng.choice(["a", "b"]),
                input_tokens=rng.randint(0, 900), output_tokens=rng.randint(0, 90),
                cost_nanos=rng.randint(0, 10**7), saved_nanos=rng.choice([0, 12_345]))
            await store.add_record(record)
            if i % 50 == 0:
                await store.add_record(record)  # a backlog re-send: stored again, counted once
        for start, end, department in [
            (MIDNIGHT - DAY, MIDNIGHT + 3 * DAY, None),
            (MIDNIGHT - 1234.5, MIDNIGHT + DAY + 7 * HOUR + 17, None),
            (MIDNIGHT + 600, MIDNIGHT + 3 * DAY + 5000, "sales"),
            (1_748_736_000, MIDNIGHT + 3 * DAY, None),  # from June 1st: a month bucket
        ]:
            records = await store.records(start, end, department)
            usage = await store.usage(start, end, department)
            assert sum(u.requests for u in usage) == len(records)
            assert build_chargeback(usage) == build_chargeback(records)
            coarse = await store.usage(start, end, department, "coarse", "d")
            assert build_chargeback(coarse) == build_chargeback(records)
            assert len({u.group for u in coarse}) <= 3 * 2  # department x model
            people = await store.usage(start, end, department, "people")
            for by in ("key_id", "user"):
                assert by_value(people, by) == by_value(usage, by)
            assert len(usage) < len(records) or end - start < DAY
        await store.close()

    asyncio.run(run())


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])  # a Redis key schema or upgrade
def test_records_written_before_rollups_are_backfilled_once(
        make_spend_store: StoreFactory, spend_backend: str) -> None:
    """An upgrade: records in Redis without rollups join them at start, once, even when two
    replicas backfill at the same time."""

    async def run() -> None:
        store = make_spend_store({"eng": {}}, clock=FakeClock(MIDNIGHT + DAY))
        backend = store.backend
        assert isinstance(backend, RedisSpendBackend)
        old = [make_record(f"old{i}", MIDNIGHT + 60 * i, cost_nanos=1000 + i) for i in range(30)]
        for record in old:  # as the previous version wrote them: no rollups, no marker
            data = record.to_dict()
            await backend.client.set(backend._record_key(record.request_id), orjson.dumps(data))
            await backend.client.zadd(f"{backend.prefix}rec:ts", {record.request_id: record.ts})
        new = make_record("new", MIDNIGHT + 7200, cost_nanos=5)
        await store.add_record(new)
        added = await asyncio.gather(backend.backfill_rollups(batch=7),
                                     backend.backfill_rollups(batch=7))
        assert sum(added) == 30
        assert await backend.backfill_rollups() == 0  # done: the marker is set
        usage = await store.usage(MIDNIGHT, MIDNIGHT + DAY)
        assert sum(u.requests for u in usage) == 31
        assert sum(u.cost_nanos for u in usage) == sum(r.cost_nanos for r in [*old, new])
        arms = await store.arm_usage(MIDNIGHT, MIDNIGHT + DAY)
        assert sum(p.requests for p in arms) == 31
        await store.close()

    asyncio.run(run())


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])  # a Redis key schema or upgrade
def test_records_written_before_arm_rollups_join_them_once(
        make_spend_store: StoreFactory, spend_backend: str) -> None:
    """An upgrade from the version with usage rollups only ("rollup":1): the backfill adds those
    records to the arm rollups, not again to the usage rollups, and a score given before the
    backfill counts once."""

    async def run() -> None:
        store = make_spend_store({"eng": {}}, clock=FakeClock(MIDNIGHT + DAY))
        backend = store.backend
        assert isinstance(backend, RedisSpendBackend)
        records = [make_record(f"r{i}", MIDNIGHT + 60 * i, experiment="e", variant="control",
                               cost_nanos=1000 + i) for i in range(12)]
        for record in records:
            await store.add_record(record)
        await store.flush()  # written (leases batch records), then rewritten as before below
        await backend.client.set(f"{backend._roll}backfilled", "1")  # the previous backfill
        await backend.client.delete(*backend._arm_keys(MIDNIGHT))  # as the previous version
        for record in records:
            data = {**record.to_dict(), "rollup": 1}
            await backend.client.set(backend._record_key(record.request_id), orjson.dumps(data))
        assert await store.set_feedback("r0", 0.5)
        added = await asyncio.gather(backend.backfill_rollups(batch=5),
                                     backend.backfill_rollups(batch=5))
        assert sum(added) == 12 and await backend.backfill_rollups() == 0
        usage = await store.usage(MIDNIGHT, MIDNIGHT + DAY)
        assert sum(u.requests for u in usage) == 12
        result = summarize_arms(await store.arm_usage(MIDNIGHT, MIDNIGHT + DAY), "e")
        assert result == summarize(await store.records(MIDNIGHT, MIDNIGHT + DAY), "e")
        assert (result.n, result.arms["control"].quality.n) == (12, 1)
        await store.close()

    asyncio.run(run())


def no_raw_records(store: Ledger) -> None:
    """Make any read of raw records fail the test."""

    async def refuse(*args: object) -> None:
        raise AssertionError("a report read raw records")

    store.backend.query_records = refuse  # type: ignore[method-assign]


def test_arm_statistics_from_rollups_equal_those_from_records(
        make_spend_store: StoreFactory) -> None:
    """Experiment results and recommendations from the arm rollups equal the same computed from
    every record, feedback (given, replaced) included, and read no raw record."""

    async def run() -> None:
        clock = FakeClock(MIDNIGHT + 3 * DAY)
        store: Ledger = make_spend_store({"eng": {}, "sales": {}}, clock=clock)
        rng = random.Random(7)
        models: list[str] = []
        for i in range(500):
            arm = rng.choice([("exp", "control"), ("exp", "variant"), ("other", "control"),
                              (None, None)])
            failed, model = rng.random() < 0.1, rng.choice(["a", "b", "c"])
            models.append(model)
            await store.add_record(make_record(
                f"r{i}", MIDNIGHT - DAY / 2 + rng.uniform(0, 3 * DAY), experiment=arm[0],
                department=rng.choice(["eng", "sales"]), saved_nanos=rng.choice([0, 4321]),
                variant=arm[1], model_used=model, provider="openai",
                task=rng.choice([None, "summary", "code"]),
                route_rule=rng.choice([None, "summaries", "default"]),
                status=500 if failed else 200, error=rng.choice([None, "cut"]) if not failed
                else "upstream_error", latency_ms=rng.uniform(50, 90_000),
                ttft_ms=rng.choice([None, rng.uniform(10, 900)]),
                input_tokens=rng.randint(0, 10**6), output_tokens=rng.randint(0, 4000),
                cost_nanos=rng.choice([0, rng.randint(1, 5 * 10**10 // (1 + 9 * (model == "c")))]),
                cache=rng.choice(["miss", "hit-exact", "off"])))
        for i in range(0, 500, 3):
            good = models[i] == "c"  # the cheapest model and the best rated: recommended
            assert await store.set_feedback(f"r{i}", rng.choice([0.8, 1.0] if good else [0, 0.25]))
            if i % 2:
                assert await store.set_feedback(f"r{i}", round(rng.random(), 3), "again")
        ranges = [(MIDNIGHT - DAY, MIDNIGHT + 3 * DAY + 1),
                  (MIDNIGHT + 5 * HOUR, MIDNIGHT + 2 * DAY + 7 * HOUR),
                  (1_748_736_000, MIDNIGHT + 3 * DAY + 1)]  # from June 1st: a month bucket
        every = [await store.records(start, end) for start, end in ranges]
        no_raw_records(store)
        for (start, end), records in zip(ranges, every, strict=True):
            slices = await store.arm_usage(start, end)
            for experiment in ("exp", "other"):
                assert summarize_arms(slices, experiment) == summarize(records, experiment)
            daily = await store.arm_usage(start, end, "d")
            assert recommend_arms(daily, RoutingRules(), min_n=5) == \
                recommend(records, RoutingRules(), min_n=5)
        first = math.floor(MIDNIGHT / DAY) - 1
        for department in (None, "eng", "sales"):
            records = [r for r in every[0] if department in (None, r.department)]
            slices = await store.arm_usage(first * DAY, clock.now + 1, "d", department,
                                           head=len(ARM_HEAD))  # as /v1/spend/daily reads
            assert {len(p.sums) for p in slices} == {len(ARM_HEAD)}
            assert daily_series_arms(slices, first, 4, ["eng", "sales"]) == \
                daily_series(records, first, 4, ["eng", "sales"])
        assert summarize(records, "exp").arms["control"].quality.n > 0
        assert recommend(records, RoutingRules(), min_n=5)  # something to compare
        await store.close()

    asyncio.run(run())


def test_a_cut_inside_an_hour_reads_at_most_a_minute_of_records_each_side(
        make_spend_store: StoreFactory) -> None:
    """Coarse reports (chargeback, per department and model) take whole minutes of an edge hour
    from the minute rollups: the raw records read are those of the partial minutes only."""

    async def run() -> None:
        clock = FakeClock(MIDNIGHT + DAY)
        store: Ledger = make_spend_store({"eng": {}, "sales": {}}, clock=clock)
        rng = random.Random(11)
        for i in range(400):
            await store.add_record(make_record(
                f"r{i}", MIDNIGHT + rng.uniform(0, DAY), department=rng.choice(["eng", "sales"]),
                model_used=rng.choice(["a", "b"]), cost_nanos=rng.randint(0, 10**7)))
        reads: list[tuple[float, float]] = []
        query = store.backend.query_records

        async def spy(start: float, end: float, department: str | None) -> list[UsageRecord]:
            reads.append((start, end))
            return await query(start, end, department)

        store.backend.query_records = spy  # type: ignore[method-assign]
        for start, end, department in [(MIDNIGHT + 1234.5, MIDNIGHT + 7 * HOUR + 1000.25, None),
                                       (MIDNIGHT + 1800, MIDNIGHT + 2400, "eng"),
                                       (MIDNIGHT + 30, MIDNIGHT + 50, None),
                                       (MIDNIGHT + 5 * HOUR + 61, MIDNIGHT + DAY + 5, "sales")]:
            reads.clear()
            usage = await store.usage(start, end, department, "coarse")
            assert all(last - first < 60 for first, last in reads), reads
            records = await query(start, end, department)
            assert build_chargeback(usage) == build_chargeback(records)
            assert sum(u.requests for u in usage) == len(records)
        await store.close()

    asyncio.run(run())


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])  # a Redis key schema or upgrade
def test_the_daily_series_reads_the_lean_day_rollups(
        make_spend_store: StoreFactory, spend_backend: str) -> None:
    """/v1/spend/daily's input comes from the lean day rollups (department x model x provider x
    task, written with each record) and equals the series from every record; a Redis written
    before they existed reads the day arms until the backfill builds them from those."""

    async def run() -> None:
        clock = FakeClock(MIDNIGHT + 2 * DAY + HOUR)
        store = make_spend_store({"eng": {}, "sales": {}}, clock=clock)
        backend = store.backend
        assert isinstance(backend, RedisSpendBackend)
        await backend.backfill_rollups()  # a fresh Redis: nothing to build, marked complete
        rng = random.Random(5)
        for i in range(300):
            arm = rng.choice([("exp", "control"), ("exp", "variant"), (None, None)])
            await store.add_record(make_record(
                f"d{i}", MIDNIGHT - DAY + rng.uniform(0, 3 * DAY + HOUR), experiment=arm[0],
                variant=arm[1], department=rng.choice(["eng", "sales"]),
                model_used=rng.choice(["a", "b"]), provider=rng.choice(["openai", "vllm"]),
                task=rng.choice([None, "summary"]), route_rule=rng.choice([None, "r"]),
                status=rng.choice([200, 200, 502]), saved_nanos=rng.choice([0, 77]),
                cost_nanos=rng.randint(0, 10**9), cache=rng.choice(["miss", "hit-exact", "off"])))
        records = await store.records(MIDNIGHT - DAY, clock.now + 1)
        read: list[str] = []
        script = backend._read_rollups

        async def spy(keys: list[str], args: list[object] | None = None) -> object:
            read.extend(keys)
            return await script(keys=keys, args=args)

        backend._read_rollups = spy  # type: ignore[assignment]
        first = math.floor(MIDNIGHT / DAY) - 1

        async def series(department: str | None) -> dict[str, object]:
            slices = await store.daily_usage(first * DAY, clock.now + 1, department)
            return daily_series_arms(slices, first, 4, ["eng", "sales"])

        for department in (None, "eng", "sales"):
            mine = [r for r in records if department in (None, r.department)]
            assert await series(department) == daily_series(mine, first, 4, ["eng", "sales"])
        assert read and all(":al:" in key for key in read)
        # as a version without lean rollups left it: no lean hashes, no marker
        await backend.client.delete(backend._lean_marker,
                                    *(backend._arm_key("l", (first + d) * DAY) for d in range(4)))
        backend._lean_ready = False
        read.clear()
        assert await series(None) == daily_series(records, first, 4, ["eng", "sales"])
        assert read and all(":ad:" in key for key in read)  # the day arms meanwhile
        await asyncio.gather(backend.backfill_rollups(), backend.backfill_rollups())
        read.clear()
        assert await series(None) == daily_series(records, first, 4, ["eng", "sales"])
        assert read and all(":al:" in key for key in read)
        await store.close()

    asyncio.run(run())
