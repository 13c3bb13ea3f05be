from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from proxy.insights.budget_advice import recommend_budgets
from proxy.insights.forecast import (
    DAY,
    HOUR,
    bucket_hourly,
    forecast_spend,
    weekday_of,
)

MONDAY = 20115  # 2025-01-27
WEEKDAY_FACTORS = (1.0, 1.1, 1.0, 0.95, 0.8, 0.3, 0.2)


def hour_shape(peak_hour: int = 14) -> np.ndarray:
    shape = np.full(24, 0.1)
    shape[8:18] = 1.0
    shape[12] = 0.5
    shape[peak_hour] = 1.6
    return shape / shape.sum()


def truth(day: int, base: float = 100.0, growth_per_day: float = 0.004) -> float:
    return base * WEEKDAY_FACTORS[weekday_of(day)] * (1 + growth_per_day * (day - MONDAY))


def hourly_records(
    days: range,
    department: str = "eng",
    noise: float = 0.0,
    seed: int = 0,
    overrides: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """One record per hour carrying that hour's spend; overrides multiply whole days."""
    rng = np.random.default_rng(seed)
    records = []
    for day in days:
        total = truth(day) * (overrides or {}).get(day, 1.0)
        total *= rng.lognormal(-(noise**2) / 2, noise) if noise else 1.0
        for hour, share in enumerate(hour_shape()):
            ts = day * DAY + hour * HOUR + 1800.0
            records.append({"ts": ts, "department": department, "cost": float(total * share)})
    return records


def test_bucketing_sums_per_department_and_hour() -> None:
    start = MONDAY * DAY
    records = [
        {"ts": start + 10.0, "department": "eng", "cost": 1.25},
        SimpleNamespace(ts=start + 3599.0, department="eng", cost=0.75),
        {"ts": start + 3600.0, "department": "eng", "cost": 2.0},
        {"ts": start + DAY + 5 * HOUR + 7, "department": "ops", "cost": 0.5},
        {"ts": start - 1.0, "department": "eng", "cost": 99.0},
        {"ts": start + 2 * DAY, "department": "eng", "cost": 99.0},
    ]
    series = bucket_hourly(records, start=start, end=start + 2 * DAY)
    assert series.first_day == MONDAY and series.n_days == 2
    eng, ops = series.hourly("eng"), series.hourly("ops")
    assert eng[0] == pytest.approx(2.0) and eng[1] == pytest.approx(2.0)
    assert eng.sum() == pytest.approx(4.0)
    assert ops[24 + 5] == pytest.approx(0.5) and ops.sum() == pytest.approx(0.5)


def test_recovers_weekly_seasonality_and_trend() -> None:
    now = (MONDAY + 56) * DAY
    result = forecast_spend(hourly_records(range(MONDAY, MONDAY + 56)), now, 7)
    (dept,) = result["departments"]
    assert dept["method"] == "weekly-profile+trend"
    assert dept["history_days"] == 56
    for h, day in enumerate(dept["days"]):
        assert day["expected"] == pytest.approx(truth(MONDAY + 56 + h), rel=0.03)
    assert dept["days"][0]["date"] == "2025-03-24"
    peak = dept["peak_hours"][0]
    assert (peak["weekday"], peak["hour_utc"]) == ("Tue", 14)


def test_one_spike_day_does_not_poison_the_forecast() -> None:
    now = (MONDAY + 56) * DAY
    spike = {MONDAY + 50: 6.0}
    clean = forecast_spend(hourly_records(range(MONDAY, MONDAY + 56)), now, 7)
    spiked = forecast_spend(hourly_records(range(MONDAY, MONDAY + 56), overrides=spike), now, 7)
    week = [truth(MONDAY + 56 + h) for h in range(7)]
    spiked_days = [d["expected"] for d in spiked["departments"][0]["days"]]
    assert spiked_days == pytest.approx(week, rel=0.05)
    shift = sum(spiked_days) / sum(d["expected"] for d in clean["departments"][0]["days"]) - 1
    assert abs(shift) < 0.03


def test_interval_coverage_on_noisy_series() -> None:
    records = hourly_records(range(MONDAY, MONDAY + 84), noise=0.1, seed=3)
    series_truth = {}
    for record in records:
        day = math.floor(record["ts"] / DAY)
        series_truth[day] = series_truth.get(day, 0.0) + record["cost"]
    inside, total = 0, 0
    for origin in range(MONDAY + 56, MONDAY + 77, 3):
        past = [r for r in records if r["ts"] < origin * DAY]
        result = forecast_spend(past, origin * DAY, 7)
        (dept,) = result["departments"]
        assert dept["interval_method"] == "rolling-origin backtest"
        for h, day in enumerate(dept["days"]):
            assert day["low"] <= day["expected"] <= day["high"]
            inside += day["low"] <= series_truth[origin + h] <= day["high"]
            total += 1
    assert 0.6 <= inside / total <= 0.98


def test_wider_interval_level_gives_wider_bounds() -> None:
    records = hourly_records(range(MONDAY, MONDAY + 56), noise=0.1, seed=5)
    now = (MONDAY + 56) * DAY
    narrow = forecast_spend(records, now, 7, interval=0.5)["departments"][0]["days"]
    wide = forecast_spend(records, now, 7, interval=0.95)["departments"][0]["days"]
    for a, b in zip(narrow, wide, strict=True):
        assert b["low"] <= a["low"] and b["high"] >= a["high"]
    assert sum(b["high"] - b["low"] for b in wide) > sum(a["high"] - a["low"] for a in narrow)


@pytest.mark.parametrize(
    ("history", "method"), [(3, "daily-mean"), (10, "weekly-profile"), (20, "weekly-profile+trend")]
)
def test_short_history_falls_back_and_says_so(history: int, method: str) -> None:
    first = MONDAY + 30
    now = (first + history) * DAY
    (dept,) = forecast_spend(hourly_records(range(first, first + history)), now, 3)["departments"]
    assert dept["method"] == method
    assert dept["history_days"] == history
    if method == "daily-mean":
        mean = np.mean([truth(first + i) for i in range(history)])
        assert [d["expected"] for d in dept["days"]] == pytest.approx([mean] * 3, rel=1e-3)
        assert dept["peak_hours"][0] == {
            "weekday": None,
            "hour_utc": 14,
            "share": pytest.approx(hour_shape()[14], rel=1e-3),
        }


def test_empty_input_and_zero_spend_departments() -> None:
    now = (MONDAY + 10) * DAY
    empty = forecast_spend([], now, 7)
    assert empty["departments"] == []
    assert [d["expected"] for d in empty["totals"]["days"]] == [0.0] * 7
    zero = [{"ts": (MONDAY + 2) * DAY + 5.0, "department": "legal", "cost": 0.0}]
    result = forecast_spend(zero, now, 2, departments=["hr"])
    by_name = {d["department"]: d for d in result["departments"]}
    assert by_name["legal"]["method"] == "no-spend" and by_name["legal"]["peak_hours"] == []
    assert by_name["hr"]["method"] == "no-history"
    for dept in by_name.values():
        assert all(d["expected"] == d["low"] == d["high"] == 0.0 for d in dept["days"])


def test_today_counts_spend_so_far_plus_remaining_share() -> None:
    records = hourly_records(range(MONDAY, MONDAY + 57))
    now = (MONDAY + 56) * DAY + 12 * HOUR  # noon, hours 0..11 recorded
    (dept,) = forecast_spend([r for r in records if r["ts"] < now], now, 2)["departments"]
    assert dept["days"][0]["expected"] == pytest.approx(truth(MONDAY + 56), rel=0.03)
    assert dept["days"][1]["expected"] == pytest.approx(truth(MONDAY + 57), rel=0.03)


@pytest.mark.parametrize(("horizon", "interval"), [(0, 0.8), (93, 0.8), (7, 1.0), (7, 0.0)])
def test_bad_arguments_name_the_parameter(horizon: int, interval: float) -> None:
    with pytest.raises(ValueError, match="horizon_days" if horizon in (0, 93) else "interval"):
        forecast_spend([], MONDAY * DAY, horizon, interval)


def hand_forecast() -> dict[str, Any]:
    days = [
        {"date": f"2025-03-{24 + i}", "expected": 100.0, "low": 90.0, "high": 112.0}
        for i in range(7)
    ]
    zero = [{**d, "expected": 0.0, "low": 0.0, "high": 0.0} for d in days]
    return {
        "horizon_days": 7,
        "interval": 0.8,
        "departments": [
            {
                "department": "eng",
                "method": "weekly-profile+trend",
                "history_days": 56,
                "days": days,
                "total": {"date": "w", "expected": 700.0, "low": 640.0, "high": 760.0},
            },
            {
                "department": "hr",
                "method": "no-spend",
                "history_days": 56,
                "days": zero,
                "total": {"date": "w", "expected": 0.0, "low": 0.0, "high": 0.0},
            },
        ],
    }


def test_budget_recommendation_math_and_reasoning() -> None:
    eng, hr = recommend_budgets(hand_forecast(), {"eng": 31.0}, {"eng": 300.0, "hr": 50.0})
    assert eng["recommended_budget"] == math.ceil(760 * 1.02) == 776
    assert eng["change"] == "increase"
    assert eng["runs_out_on"] == "Thu 2025-03-27"  # 100/day: 400 > 300 on the 4th day
    for fragment in (
        "forecast $700/week",
        "80% interval $640-$760",
        "cache saved $31 last week",
        "recommend $776/week = upper bound + 2% headroom",
        "current $300 would run out on Thu 2025-03-27",
    ):
        assert fragment in eng["reasoning"]
    assert hr["recommended_budget"] == 50.0 and hr["change"] == "keep"
    assert "no spend forecast" in hr["reasoning"]


def test_budget_that_covers_the_upper_bound_is_kept() -> None:
    (eng, _) = recommend_budgets(hand_forecast(), {}, {"eng": 790.0}, headroom=0.0)
    assert eng["recommended_budget"] == 760
    assert eng["change"] == "keep" and eng["runs_out_on"] is None
    assert "current $790 covers the upper bound" in eng["reasoning"]
    assert "cache saved" not in eng["reasoning"]


def test_recommendations_from_a_real_forecast_have_no_current_budget() -> None:
    now = (MONDAY + 56) * DAY
    forecast = forecast_spend(hourly_records(range(MONDAY, MONDAY + 56)), now, 7)
    (eng,) = recommend_budgets(forecast, {}, {})
    assert eng["change"] == "new" and eng["current_budget"] is None
    assert eng["recommended_budget"] >= forecast["departments"][0]["total"]["high"]
