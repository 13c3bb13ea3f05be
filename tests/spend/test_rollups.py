"""Rollups: a report read from hour/day rollups equals the same report from every record."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from proxy.spend.chargeback import build_chargeback
from proxy.spend.ledger import Ledger
from proxy.spend.redis_backend import RedisSpendBackend
from proxy.spend.rollups import DAY, HOUR, Plan, Slice, plan_range
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
def test_records_written_before_rollups_are_backfilled_once(
        make_spend_store: StoreFactory, spend_backend: str) -> None:
    """An upgrade: records in Redis without rollups join them at start, once, even when two
    replicas backfill at the same time."""
    if spend_backend != "redis":
        pytest.skip("Redis upgrade path")

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
        await store.close()

    asyncio.run(run())
