"""Budget recommendations from a spend forecast (proxy/insights/budget_advice.py): upper bound
plus headroom, the change against the current budget, when it runs out, and the reasoning."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from proxy.insights.budget_advice import recommend_budgets

START = date(2025, 6, 16)  # a Monday


def forecast(*departments: dict[str, Any], horizon: int = 7,
             interval: float = 0.9) -> dict[str, Any]:
    return {"horizon_days": horizon, "interval": interval, "departments": list(departments)}


def dept(name: str, daily: float, *, high: float | None = None, days: int = 7) -> dict[str, Any]:
    expected = daily * days
    return {"department": name, "method": "seasonal", "history_days": 28,
            "total": {"expected": expected, "low": expected * 0.8,
                      "high": expected * 1.2 if high is None else high},
            "days": [{"date": (START + timedelta(days=i)).isoformat(), "expected": daily}
                     for i in range(days)]}


def one(result: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(result) == 1
    return result[0]


def test_a_department_without_a_budget_gets_the_upper_bound_plus_headroom() -> None:
    advice = one(recommend_budgets(forecast(dept("eng", 100.0)), {}, {}))
    assert advice["department"] == "eng" and advice["period_days"] == 7
    assert (advice["forecast"], advice["low"], advice["high"]) == (700.0, 560.0, 840.0)
    assert advice["recommended_budget"] == 857.0  # ceil(840 * 1.02), whole dollars from $10
    assert (advice["change"], advice["current_budget"], advice["runs_out_on"]) == (
        "new", None, None)
    assert advice["reasoning"] == (
        "forecast $700/week (90% interval $560-$840; method seasonal, 28 days of history); "
        "recommend $857/week = upper bound + 2% headroom; no current budget")


def test_small_amounts_are_rounded_up_to_the_cent() -> None:
    advice = one(recommend_budgets(forecast(dept("eng", 0.1, high=1.234)), {}, {}))
    assert advice["recommended_budget"] == 1.26  # 1.234 * 1.02 = 1.25868
    assert "recommend $1.26/week" in advice["reasoning"]


def test_a_budget_that_runs_out_names_the_day() -> None:
    advice = one(recommend_budgets(forecast(dept("eng", 100.0)), {}, {"eng": 250.0}))
    assert advice["runs_out_on"] == "Wed 2025-06-18"  # 300 > 250 on the third day
    assert advice["change"] == "increase"
    assert advice["reasoning"].endswith(
        "current $250 would run out on Wed 2025-06-18 at the expected rate")


@pytest.mark.parametrize(("current", "change", "note"), [
    (857.0, "keep", "current $857 covers the upper bound"),
    (820.0, "keep", "current $820 covers the expected spend but not the upper bound"),
    (750.0, "increase", "current $750 covers the expected spend but not the upper bound"),
    (2000.0, "decrease", "current $2,000 covers the upper bound"),
])
def test_change_against_the_current_budget(current: float, change: str, note: str) -> None:
    advice = one(recommend_budgets(forecast(dept("eng", 100.0)), {}, {"eng": current}))
    assert advice["change"] == change
    assert advice["runs_out_on"] is None
    assert advice["reasoning"].endswith(note)


def test_cache_savings_are_reported_not_added() -> None:
    advice = one(recommend_budgets(forecast(dept("eng", 100.0)), {"eng": 20.004}, {}))
    assert advice["cache_savings"] == 20.0
    assert advice["recommended_budget"] == 857.0  # same as without savings
    assert ("cache saved $20 last week, already netted out of recorded spend; without it "
            "the upper bound would be about $860") in advice["reasoning"]


def test_no_forecast_keeps_the_current_budget() -> None:
    idle = dept("idle", 0.0, high=0.0)
    kept = one(recommend_budgets(forecast(idle), {}, {"idle": 50.0}))
    assert (kept["recommended_budget"], kept["change"], kept["runs_out_on"]) == (50.0, "keep",
                                                                                   None)
    assert "no spend forecast, so the budget is left as it is" in kept["reasoning"]
    new = one(recommend_budgets(forecast(idle), {}, {}))
    assert (new["recommended_budget"], new["change"]) == (0.0, "new")


@pytest.mark.parametrize(("horizon", "period"), [(7, "week"), (1, "day"), (30, "30 days")])
def test_the_period_is_the_forecast_horizon(horizon: int, period: str) -> None:
    advice = one(recommend_budgets(forecast(dept("eng", 100.0, days=horizon), horizon=horizon),
                                   {}, {}))
    assert f"/{period} " in advice["reasoning"]


def test_headroom_and_one_entry_per_department_in_order() -> None:
    result = recommend_budgets(forecast(dept("b", 10.0), dept("a", 20.0)), {}, {}, headroom=0.5)
    assert [r["department"] for r in result] == ["b", "a"]
    assert result[0]["recommended_budget"] == 126.0  # 84 * 1.5
    assert "+ 50% headroom" in result[0]["reasoning"]
    assert recommend_budgets(forecast(), {}, {}) == []
