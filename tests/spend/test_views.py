"""Pure helpers of the spend admin API (proxy/spend/views.py): time parameters, dimensions and
the aggregations the Spend page shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.spend.budgets import BudgetStatus
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import Slice
from proxy.spend.views import (
    RECENT_LIMIT,
    budget_view,
    day_start,
    department_view,
    dimension,
    dimension_value,
    month_start,
    parse_instant,
    recent,
    spend_rows,
    time_range,
    total_nanos,
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def record(request_id: str, ts_: float = 1_750_000_000.0, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "request_id": request_id, "ts": ts_, "department": "eng", "key_id": "k1", "user": "ann",
        "endpoint": "chat.completions", "model_requested": "m", "model_used": "m",
        "provider": "openai", "status": 200}
    return UsageRecord(**{**base, **fields})


# -- time parameters -------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("1750000000", 1_750_000_000.0),
    (" 1750000000.5 ", 1_750_000_000.5),
    ("0", 0.0),
    ("2025-06-01", ts("2025-06-01T00:00:00")),
    ("2025-06-01T12:30:00", ts("2025-06-01T12:30:00")),
    ("2025-06-01T12:30:00+02:00", ts("2025-06-01T10:30:00")),
    ("2025-06-01T12:30:00Z", ts("2025-06-01T12:30:00")),
])
def test_parse_instant(raw: str, expected: float) -> None:
    assert parse_instant(raw, "from") == expected


def test_a_date_as_the_end_of_a_range_includes_that_whole_day() -> None:
    assert parse_instant("2025-06-01", "to", end_of_day=True) == ts("2025-06-02T00:00:00")
    assert parse_instant("2024-12-31", "to", end_of_day=True) == ts("2025-01-01T00:00:00")
    # a datetime is taken as is
    assert parse_instant("2025-06-01T05:00", "to", end_of_day=True) == ts("2025-06-01T05:00:00")


@pytest.mark.parametrize("raw", ["yesterday", "", "nan", "inf", "2025-13-01", "2025-06-31",
                                 "01/06/2025", "2025-06-01T25:00"])
def test_parse_instant_rejects_with_a_400_naming_the_parameter(raw: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_instant(raw, "from")
    assert info.value.to_dict() == {"error": {
        "message": "Invalid 'from': expected unix seconds, an ISO date (2025-06-01) or "
                   f"datetime, got '{raw}'.",
        "type": "invalid_request_error", "param": "from", "code": "invalid_value"}}


def test_month_and_day_start() -> None:
    now = ts("2025-06-15T15:06:40")
    assert month_start(now) == ts("2025-06-01T00:00:00")
    assert day_start(now) == ts("2025-06-15T00:00:00")
    assert month_start(ts("2025-01-01T00:00:00")) == ts("2025-01-01T00:00:00")


def test_time_range_defaults_to_this_month_until_now() -> None:
    now = ts("2025-06-15T15:06:40")
    assert time_range({}, now) == (ts("2025-06-01T00:00:00"), now + 1.0)
    assert time_range({"from": "", "to": ""}, now) == (ts("2025-06-01T00:00:00"), now + 1.0)
    assert time_range({"from": "2025-05-01", "to": "2025-05-31"}, now) == (
        ts("2025-05-01T00:00:00"), ts("2025-06-01T00:00:00"))
    assert time_range({"from": "2025-05-01", "to": "2025-05-01"}, now)[1] == \
        ts("2025-05-02T00:00:00")  # one whole day


@pytest.mark.parametrize("params", [
    {"from": "2025-06-02", "to": "2025-06-01"},
    {"from": "100", "to": "100"},
    {"from": "2025-07-01"},  # after now
])
def test_an_empty_or_reversed_range_is_a_400(params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        time_range(params, ts("2025-06-15T00:00:00"))
    assert info.value.param == "to"
    assert info.value.message == "Invalid 'to': it must be later than 'from'."


# -- dimensions and rows ---------------------------------------------------------------------

@pytest.mark.parametrize(("params", "expected"), [
    ({}, "department"), ({"by": ""}, "department"), ({"by": "key"}, "key"),
    ({"by": "user"}, "user"), ({"by": "model"}, "model")])
def test_dimension(params: dict[str, str], expected: str) -> None:
    assert dimension(params) == expected


@pytest.mark.parametrize("raw", ["Department", "team", "model "])
def test_unknown_dimension_is_a_400(raw: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        dimension({"by": raw})
    assert info.value.message == ("Invalid 'by': expected one of department, key, user, model, "
                                  f"got '{raw}'.")
    assert info.value.param == "by"


def test_dimension_value_fills_in_missing_names() -> None:
    old = Slice.of_record(record("r", department="", user=None, model_used="gpt", key_id="key_1"))
    assert dimension_value(old, "department") == "admin"
    assert dimension_value(old, "user") == "(none)"
    assert dimension_value(old, "model") == "gpt"
    assert dimension_value(old, "key") == "key_1"


def test_spend_rows_sum_exactly_and_sort_by_cost_then_name() -> None:
    records = [record("1", model_used="b", cost_nanos=1, input_tokens=10, output_tokens=1),
               record("2", model_used="b", cost_nanos=2, saved_nanos=5, input_tokens=5),
               record("3", model_used="a", cost_nanos=3),
               record("4", model_used="c", cost_nanos=100_000_000_000)]
    rows = spend_rows([Slice.of_record(r) for r in records], "model")  # one slice per record
    assert [r["model"] for r in rows] == ["c", "a", "b"]  # a and b tie at 3: by name
    assert rows[2] == {"model": "b", "requests": 2, "input_tokens": 15, "output_tokens": 1,
                       "cost_usd": "0.000000003", "saved_usd": "0.000000005", "cost_nanos": 3}
    assert rows[0]["cost_usd"] == "100.000000000"
    assert spend_rows([], "user") == []


def test_total_nanos() -> None:
    records = [record("1", cost_nanos=7, saved_nanos=1), record("2", cost_nanos=3)]
    assert total_nanos(records) == 10
    assert total_nanos(records, "saved_nanos") == 1
    assert total_nanos([]) == 0


# -- budgets and departments -----------------------------------------------------------------

def test_budget_view() -> None:
    status = BudgetStatus("eng", "daily", 10.0, 2.5, 0.1234567, 3599.99949)
    assert budget_view(status) == {"period": "daily", "limit_dollars": 10.0,
                                   "spent_dollars": 2.5, "reserved_dollars": 0.1234567,
                                   "remaining_dollars": 7.376543, "resets_in_seconds": 3599.999}


def test_department_view_counts_today_and_the_month_of_that_department_only() -> None:
    today = ts("2025-06-15T00:00:00")
    month = [Slice.of_record(r) for r in [
        record("1", today - 3600, cost_nanos=1_000_000_000, saved_nanos=10),
        record("2", today, cost_nanos=500_000_000),
        record("3", today + 60, department="sales", cost_nanos=9)]]
    today_usage = [s for s in month if s.start >= today]
    statuses = [BudgetStatus("eng", "daily", 10.0, 0.5, 0.0, 60.0),
                BudgetStatus("eng", "monthly", 2.0, 1.5, 0.0, 600.0)]
    view = department_view("eng", month, today_usage, statuses, paused=True)
    assert view == {"department": "eng", "today_usd": "0.500000000",
                    "month_usd": "1.500000000", "saved_usd": "0.000000010",
                    "requests_today": 1, "requests_month": 2, "paused": True,
                    "budgets": [budget_view(s) for s in statuses],
                    "budget_remaining_usd": 0.5}
    assert department_view("idle", month, today_usage, [], False)["budget_remaining_usd"] is None


def test_recent_is_newest_first_and_bounded() -> None:
    records = [record(f"r{i}", 1_750_000_000.0 + i) for i in range(RECENT_LIMIT + 5)]
    shown = recent(records)
    assert len(shown) == RECENT_LIMIT
    assert shown[0]["request_id"] == f"r{RECENT_LIMIT + 4}"
    assert [r["request_id"] for r in recent(records, 2)] == [f"r{RECENT_LIMIT + 4}",
                                                             f"r{RECENT_LIMIT + 3}"]
    assert recent([]) == []
