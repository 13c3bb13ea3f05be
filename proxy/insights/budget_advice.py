"""Budget recommendations: next period's budget per department from its spend forecast and the
cache savings it already had, with the reasoning spelled out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from proxy.insights.forecast import WEEKDAYS, round_cents


@dataclass(frozen=True)
class BudgetRecommendation:
    department: str
    period_days: int
    forecast: float
    low: float
    high: float
    cache_savings: float
    current_budget: float | None
    recommended_budget: float
    change: str
    runs_out_on: str | None
    reasoning: str


def _round_up(value: float) -> float:
    return float(math.ceil(value)) if value >= 10 else math.ceil(value * 100) / 100


def _money(value: float) -> str:
    return f"${value:,.0f}" if value >= 10 else f"${value:,.2f}"


def _run_out(days: list[dict[str, Any]], budget: float) -> str | None:
    spent = 0.0
    for day in days:
        spent += float(day["expected"])
        if spent > budget:
            weekday = WEEKDAYS[datetime.fromisoformat(day["date"]).weekday()]
            return f"{weekday} {day['date']}"
    return None


def _recommend_one(
    dept: Mapping[str, Any],
    period: str,
    interval: float,
    savings: float,
    current: float | None,
    headroom: float,
) -> BudgetRecommendation:
    total, days = dept["total"], dept["days"]
    expected, low, high = float(total["expected"]), float(total["low"]), float(total["high"])
    reasons = [
        f"forecast {_money(expected)}/{period} ({interval:.0%} interval {_money(low)}-"
        f"{_money(high)}; method {dept['method']}, {dept['history_days']} days of history)"
    ]
    if savings > 0:
        reasons.append(
            f"cache saved {_money(savings)} last {period}, already netted out of recorded spend; "
            f"without it the upper bound would be about {_money(high + savings)}"
        )
    if high <= 0:
        recommended = current if current is not None else 0.0
        reasons.append("no spend forecast, so the budget is left as it is")
    else:
        recommended = _round_up(high * (1 + headroom))
        reasons.append(
            f"recommend {_money(recommended)}/{period} = upper bound + {headroom:.0%} headroom"
        )
    runs_out = _run_out(days, current) if current is not None and high > 0 else None
    reasons.append(_current_note(current, runs_out, high))
    change = "new" if current is None else _change(current, recommended)
    return BudgetRecommendation(
        dept["department"],
        len(days),
        expected,
        low,
        high,
        round_cents(savings),
        current,
        recommended,
        change,
        runs_out,
        "; ".join(reasons),
    )


def _current_note(current: float | None, runs_out: str | None, high: float) -> str:
    if current is None:
        return "no current budget"
    if runs_out:
        return f"current {_money(current)} would run out on {runs_out} at the expected rate"
    if current < high:
        return f"current {_money(current)} covers the expected spend but not the upper bound"
    return f"current {_money(current)} covers the upper bound"


def _change(current: float, recommended: float) -> str:
    if abs(recommended - current) <= 0.05 * max(current, 1e-9):
        return "keep"
    return "increase" if recommended > current else "decrease"


def recommend_budgets(
    forecast: Mapping[str, Any],
    savings_by_department: Mapping[str, float],
    current_budgets: Mapping[str, float],
    headroom: float = 0.02,
) -> list[dict[str, Any]]:
    """Next period's budget per department: forecast upper bound plus ``headroom``.

    The period is the forecast horizon, and budgets are assumed to reset at its first day.
    Savings are reported, not added: recorded costs are already what was paid after the cache.
    """
    horizon = int(forecast["horizon_days"])
    period = "week" if horizon == 7 else "day" if horizon == 1 else f"{horizon} days"
    return [
        asdict(
            _recommend_one(
                dept,
                period,
                float(forecast["interval"]),
                float(savings_by_department.get(dept["department"], 0.0)),
                current_budgets.get(dept["department"]),
                headroom,
            )
        )
        for dept in forecast["departments"]
    ]
