"""Chargeback rows per UTC day x department x model; totals equal the per-request sum exactly."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from decimal import Decimal

import orjson

from proxy.spend.chargeback import build_chargeback, chargeback_csv, chargeback_json
from proxy.spend.pricing import PricingTable, format_nanos
from proxy.spend.records import UsageRecord
from tests.spend_helpers import FakeClock, StoreFactory, make_record

MIDNIGHT = 1_750_032_000.0  # 2025-06-16T00:00:00Z


def priced_records(pricing_table: PricingTable, count: int, seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "anthropic/claude-3.5-sonnet", "unknown-x"]
    records = []
    for i in range(count):
        model = rng.choice(models)
        usage = {"prompt_tokens": rng.randint(1, 5000), "completion_tokens": rng.randint(0, 900),
                 "prompt_tokens_details": {"cached_tokens": rng.choice([0, 0, 512])}}  # fmt: skip
        cost = pricing_table.cost(model, usage)
        hit = rng.random() < 0.2
        records.append(make_record(
            f"r{i}", MIDNIGHT + rng.uniform(-86_400, 86_400),
            department=rng.choice(["eng", "sales"]), model_used=model,
            input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"],
            cached_input_tokens=min(512, usage["prompt_tokens"]) if usage[
                "prompt_tokens_details"]["cached_tokens"] else 0,
            cost=0.0 if hit else cost.dollars, saved=cost.dollars if hit else 0.0,
        ))  # fmt: skip
    return records


def test_totals_equal_the_exact_sum_of_request_costs(pricing_table: PricingTable) -> None:
    records = priced_records(pricing_table, 5000)
    report = build_chargeback(records)
    exact = sum(Decimal(str(r.cost)) for r in records)
    assert Decimal(format_nanos(report.total.cost_nanos)) == exact
    assert sum(row.cost_nanos for row in report.rows) == report.total.cost_nanos
    assert report.total.requests == 5000
    assert report.total.saved_nanos == sum(round(r.saved * 1_000_000_000) for r in records)
    assert report.total.output_tokens == sum(r.output_tokens for r in records)
    assert {row.day for row in report.rows} == {"2025-06-15", "2025-06-16"}
    assert len(report.rows) == 2 * 2 * 5


def test_rows_split_at_utc_midnight_and_group_by_department_and_model() -> None:
    records = [
        make_record("a", MIDNIGHT - 1, cost=0.1, input_tokens=10, output_tokens=1),
        make_record("b", MIDNIGHT, cost=0.2, input_tokens=20, output_tokens=2),
        make_record("c", MIDNIGHT + 5, cost=0.3, input_tokens=30, output_tokens=3),
        make_record("d", MIDNIGHT + 6, cost=0.0, saved=0.3, cache="hit-exact"),
        make_record("e", MIDNIGHT + 7, cost=1.0, model_used="gpt-4o"),
    ]
    rows = [(r.day, r.model, r.requests, r.input_tokens, r.cost_nanos, r.saved_nanos)
            for r in build_chargeback(records).rows]  # fmt: skip
    assert rows == [
        ("2025-06-15", "gpt-4o-mini", 1, 10, 100_000_000, 0),
        ("2025-06-16", "gpt-4o", 1, 0, 1_000_000_000, 0),
        ("2025-06-16", "gpt-4o-mini", 3, 50, 500_000_000, 300_000_000),
    ]


def test_csv_and_json_exports_carry_rows_and_the_totals_row(pricing_table: PricingTable) -> None:
    report = build_chargeback(priced_records(pricing_table, 300))
    table = list(csv.DictReader(io.StringIO(chargeback_csv(report))))
    assert table[-1]["day"] == "TOTAL" and len(table) == len(report.rows) + 1
    body = sum(Decimal(row["cost_usd"]) for row in table[:-1])
    assert Decimal(table[-1]["cost_usd"]) == body
    assert int(table[-1]["requests"]) == 300
    parsed = orjson.loads(chargeback_json(report))
    assert parsed["total"]["cost_nanos"] == sum(r["cost_nanos"] for r in parsed["rows"])
    assert parsed["total"]["cost_usd"] == table[-1]["cost_usd"]


def test_store_chargeback_matches_its_records(
    make_spend_store: StoreFactory, pricing_table: PricingTable
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": {}, "sales": {}}, clock=FakeClock(MIDNIGHT + 86_400))
        records = priced_records(pricing_table, 200, seed=3)
        for record in records:
            await store.add_record(record)
        report = await store.chargeback(MIDNIGHT - 86_400, MIDNIGHT + 86_400)
        assert report == build_chargeback(records)
        only_eng = await store.chargeback(MIDNIGHT - 86_400, MIDNIGHT + 86_400, "eng")
        assert {row.department for row in only_eng.rows} == {"eng"}
        assert only_eng.total.requests == sum(r.department == "eng" for r in records)
        await store.close()

    asyncio.run(run())
