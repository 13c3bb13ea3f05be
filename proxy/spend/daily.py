"""Daily series of usage records for the Spend page's charts and the chat page's "analyze"
action: cost per UTC day and department, shares by department, model, provider and task, and the
cache's hit rate and savings per day, from the day arm rollups (proxy.spend.rollups). Money is
summed in integer nano-dollars."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from proxy.spend.pricing import nanos_to_dollars
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import ARM_HEAD, ArmSlice, arm_slice_of

DAY = 86_400.0
MAX_DAYS = 92


def iso_day(day_index: int) -> str:
    return datetime.fromtimestamp(day_index * DAY, UTC).strftime("%Y-%m-%d")


def first_day_index(now: float, days: int) -> int:
    """The UTC day `days - 1` days before today: the window ends with today."""
    return math.floor(now / DAY) - (days - 1)


def _dollars(values: Iterable[int]) -> list[float]:
    return [nanos_to_dollars(v) for v in values]


def _shares(totals: dict[str, int]) -> list[dict[str, Any]]:
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"name": name, "cost_usd": nanos_to_dollars(m)} for name, m in ordered]


def daily_series(records: Iterable[UsageRecord], first: int, days: int,
                 departments: Iterable[str]) -> dict[str, Any]:
    """daily_series_arms over the records' own statistics."""
    return daily_series_arms((arm_slice_of(r, "d") for r in records), first, days, departments)


def daily_series_arms(slices: Iterable[ArmSlice], first: int, days: int,
                      departments: Iterable[str]) -> dict[str, Any]:
    """The series from day (or finer) arm rollups (`Ledger.arm_usage(..., coarsest="d")`)."""
    cost = {name: [0] * days for name in departments}
    requests, hits, lookups, saved = [0] * days, [0] * days, [0] * days, [0] * days
    by_model: dict[str, int] = defaultdict(int)
    by_provider: dict[str, int] = defaultdict(int)
    by_task: dict[str, int] = defaultdict(int)
    for part in slices:
        slot = math.floor(part.start / DAY) - first
        if not 0 <= slot < days:
            continue
        count, _, nanos, saved_nanos, looked_up, hit = part.sums[:len(ARM_HEAD)]
        series = cost.get(part.department)
        if series is None:
            series = cost[part.department] = [0] * days
        series[slot] += nanos
        requests[slot] += count
        saved[slot] += saved_nanos
        lookups[slot] += looked_up
        hits[slot] += hit
        _, _, _, model, provider, task, _ = part.key
        by_model[model] += nanos
        by_provider[provider] += nanos
        by_task[task or "(none)"] += nanos
    totals = {name: sum(series) for name, series in cost.items()}
    return {
        "object": "spend.daily",
        "days": [iso_day(first + i) for i in range(days)],
        "cost_usd": {name: _dollars(series) for name, series in sorted(cost.items())},
        "requests": requests,
        "by_department": _shares(totals),
        "by_model": _shares(by_model),
        "by_provider": _shares(by_provider),
        "by_task": _shares(by_task),
        "cache": {"lookups": lookups, "hits": hits,
                  "hit_rate": [h / n if n else None for h, n in zip(hits, lookups, strict=True)],
                  "saved_usd": _dollars(saved)},
        "total_usd": nanos_to_dollars(sum(totals.values())),
    }
