"""daily_series: days, departments, shares and the cache per day, from records."""

from __future__ import annotations

from proxy.spend.daily import DAY, daily_series
from proxy.spend.pricing import to_nanos
from proxy.spend.records import UsageRecord


def record(day: int, department: str, cost: float, *, model: str = "m1", cache: str = "miss",
           saved: float = 0.0, task: str | None = None) -> UsageRecord:
    return UsageRecord(f"r{day}{department}{cost}", day * DAY + 3600, department, "k", None,
                       "chat.completions", model, model, "openai", 200, cost_nanos=to_nanos(cost),
                       saved_nanos=to_nanos(saved), cache=cache, task=task)  # type: ignore[arg-type]


def test_daily_series_sums_per_day_and_department() -> None:
    first = 20_000
    records = [record(first, "a", 0.1), record(first, "a", 0.2, model="m2"),
               record(first + 2, "b", 0.05, cache="hit-exact", saved=0.3, task="summary"),
               record(first + 2, "a", 0.0, cache="hit-semantic", saved=0.1),
               record(first + 3, "a", 9.0),  # outside the 3-day window
               record(first - 1, "a", 9.0)]
    view = daily_series(records, first, 3, ["a", "b", "c"])
    assert view["days"] == ["2024-10-04", "2024-10-05", "2024-10-06"]
    assert view["cost_usd"] == {"a": [0.3, 0.0, 0.0], "b": [0.0, 0.0, 0.05], "c": [0.0] * 3}
    assert view["requests"] == [2, 0, 2]
    assert view["by_department"] == [{"name": "a", "cost_usd": 0.3},
                                     {"name": "b", "cost_usd": 0.05},
                                     {"name": "c", "cost_usd": 0.0}]
    assert view["by_model"] == [{"name": "m2", "cost_usd": 0.2}, {"name": "m1", "cost_usd": 0.15}]
    assert view["by_task"][0] == {"name": "(none)", "cost_usd": 0.3}
    assert view["cache"] == {"lookups": [2, 0, 2], "hits": [0, 0, 2],
                             "hit_rate": [0.0, None, 1.0], "saved_usd": [0.0, 0.0, 0.4]}
    assert view["total_usd"] == 0.35
