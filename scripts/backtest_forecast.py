"""Backtest proxy.insights.forecast on a seeded synthetic usage trace; compare with naive baselines.

The trace is per-request records (ts, department, cost) with: office-hours shape in each
department's local time (lunch dip, evening tail), weekday/weekend pattern, compound growth,
day-level and hour-level multiplicative noise, Poisson request counts with log-normal request
costs, one runaway-job spike day and one public holiday. Forecasts are made at UTC midnight
(rolling origin, one origin per day) from the records before the origin only.

    python -m scripts.backtest_forecast [--seed 7] [--weeks 13] [--eval-weeks 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.insights.forecast import DAY, HourlySeries, bucket_hourly, forecast_series, weekday_of

START_DAY = 20115  # 2025-01-27, a Monday
FORECAST_KEYS = ("model", "same_day_last_week", "mean_7d", "oracle")


@dataclass(frozen=True)
class Department:
    name: str
    weekday_dollars: float
    weekend_factor: float
    utc_offset: int
    growth_per_week: float
    day_noise: float
    request_dollars: float


DEPARTMENTS = (
    Department("engineering", 420.0, 0.22, 1, 0.03, 0.08, 0.15),
    Department("support", 180.0, 0.55, -5, 0.02, 0.07, 0.06),
    Department("marketing", 70.0, 0.10, -8, 0.05, 0.12, 0.05),
    Department("research", 250.0, 0.50, 0, 0.04, 0.15, 0.60),
    Department("legal", 12.0, 0.05, 1, 0.01, 0.10, 0.05),
)
FRIDAY_FACTOR = 0.85


def office_shape(weekend: bool) -> np.ndarray:
    """Relative activity per local hour: night floor, ramp, lunch dip, evening tail."""
    shape = np.full(24, 0.04)
    shape[7:9] = [0.3, 0.8]
    shape[9:12] = 1.0
    shape[12] = 0.55
    shape[13:17] = [0.95, 1.0, 0.95, 0.85]
    shape[17:21] = [0.6, 0.35, 0.2, 0.12]
    if weekend:
        shape = 0.5 * shape + 0.5 * shape.mean()
    normalised: np.ndarray = shape / shape.sum()
    return normalised


def daily_expectation(dept: Department, day: int, holiday: int) -> float:
    weekday = weekday_of(day)
    value = dept.weekday_dollars * (1 + dept.growth_per_week) ** ((day - START_DAY) / 7.0)
    if weekday >= 5:
        value *= dept.weekend_factor
    elif weekday == 4:
        value *= FRIDAY_FACTOR
    if day == holiday and dept.name != "support":
        value *= 0.15
    return float(value)


def hourly_dollars(
    dept: Department, days: int, rng: np.random.Generator, spike_day: int, holiday: int
) -> np.ndarray:
    """Expected dollars per UTC hour, noise included, for ``days`` days from START_DAY."""
    out = np.zeros(days * 24)
    for i in range(days):
        day = START_DAY + i
        total = daily_expectation(dept, day, holiday) * rng.lognormal(
            -(dept.day_noise**2) / 2, dept.day_noise
        )
        local = np.roll(office_shape(weekday_of(day) >= 5), dept.utc_offset)
        noise = rng.lognormal(-0.02, 0.2, 24)
        out[i * 24 : i * 24 + 24] += total * local * noise / (local * noise).sum()
    if dept.name == "research":
        # a runaway batch job: ~4x the usual day, concentrated in six night hours
        start = (spike_day - START_DAY) * 24 + 1
        out[start : start + 6] += 3 * dept.weekday_dollars * 1.2 / 6
    return out


def generate_records(
    seed: int, days: int, spike_day: int, holiday: int
) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    for dept in DEPARTMENTS:
        dollars = hourly_dollars(dept, days, rng, spike_day, holiday)
        counts = rng.poisson(dollars / dept.request_dollars)
        for hour, count in enumerate(counts):
            if count == 0:
                continue
            # log-normal request costs (sigma 0.8) with mean request_dollars
            costs = dept.request_dollars * rng.lognormal(-0.32, 0.8, count)
            stamps = (START_DAY * 24 + hour + rng.random(count)) * 3600.0
            for ts, cost in zip(stamps.tolist(), costs.tolist(), strict=True):
                yield {"ts": ts, "department": dept.name, "cost": cost}


def baselines(daily: np.ndarray, origin: int, h: int) -> dict[str, float]:
    return {
        "same_day_last_week": float(daily[origin + h - 7]),
        "mean_7d": float(daily[origin - 7 : origin].mean()),
    }


def collect(
    series: HourlySeries, oracle: dict[str, np.ndarray], first_eval: int, last_day: int
) -> list[dict[str, Any]]:
    """One row per (origin, department, horizon step) with forecasts and the actual.

    ``oracle`` is the noise-free expectation the trace was drawn from (it knows the holiday but
    not the spike): the best any forecaster could do on average, so the gap to it is the error
    that is the model's fault rather than the noise's."""
    rows: list[dict[str, Any]] = []
    for origin in range(first_eval, last_day + 1):
        forecast = forecast_series(series, (series.first_day + origin) * DAY, 7)
        for dept in forecast["departments"]:
            daily = series.hourly(dept["department"]).reshape(-1, 24).sum(axis=1)
            for h, day in enumerate(dept["days"]):
                if origin + h > last_day:
                    break
                rows.append(
                    {
                        "origin": origin,
                        "h": h + 1,
                        "department": dept["department"],
                        "actual": float(daily[origin + h]),
                        "model": day["expected"],
                        "low": day["low"],
                        "high": day["high"],
                        **baselines(daily, origin, h),
                        "oracle": float(oracle[dept["department"]][origin + h]),
                    }
                )
    return rows


def accuracy(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    actual = np.array([r["actual"] for r in rows])
    predicted = np.array([r[key] for r in rows])
    errors = np.abs(predicted - actual)
    return {
        "1-mape": round(1 - float(np.mean(errors / actual)), 4),
        "1-wape": round(1 - float(errors.sum() / actual.sum()), 4),
    }


def weekly_totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["origin"], row["department"]), []).append(row)
    sums = []
    for (origin, dept), members in grouped.items():
        if len(members) == 7:
            totals = {k: sum(m[k] for m in members) for k in ("actual", *FORECAST_KEYS)}
            sums.append({"origin": origin, "department": dept, **totals})
    return sums


def summarise(rows: list[dict[str, Any]], anomalies: set[int]) -> dict[str, Any]:
    scopes = {
        "day_ahead": [r for r in rows if r["h"] == 1],
        "day_ahead_excl_anomalies": [
            r for r in rows if r["h"] == 1 and r["origin"] not in anomalies
        ],
        "week_ahead_daily": rows,
        "week_ahead_daily_excl_anomalies": [
            r for r in rows if r["origin"] + r["h"] - 1 not in anomalies
        ],
        "week_total": weekly_totals(rows),
    }
    names = ["overall", *sorted({r["department"] for r in rows})]
    result: dict[str, Any] = {}
    for scope, members in scopes.items():
        result[scope] = {}
        for name in names:
            chosen = [r for r in members if name == "overall" or r["department"] == name]
            entry: dict[str, Any] = {key: accuracy(chosen, key) for key in FORECAST_KEYS}
            if "low" in chosen[0]:
                inside = [r["low"] <= r["actual"] <= r["high"] for r in chosen]
                entry["model"]["coverage_80"] = round(float(np.mean(inside)), 3)
            entry["n"] = len(chosen)
            result[scope][name] = entry
    return result


def print_table(summary: dict[str, Any]) -> None:
    for scope, table in summary.items():
        print(f"\n{scope}")
        print(
            f"  {'department':<12} {'n':>4}  {'model 1-MAPE':>12} {'1-WAPE':>7} {'cover80':>7}"
            f"  {'last-week':>9} {'mean-7d':>8} {'oracle':>7}"
        )
        for name, entry in table.items():
            model = entry["model"]
            cover = f"{model['coverage_80']:.0%}" if "coverage_80" in model else "-"
            print(
                f"  {name:<12} {entry['n']:>4}  {model['1-mape']:>12.1%} {model['1-wape']:>7.1%}"
                f" {cover:>7}  {entry['same_day_last_week']['1-mape']:>9.1%}"
                f" {entry['mean_7d']['1-mape']:>8.1%} {entry['oracle']['1-mape']:>7.1%}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--weeks", type=int, default=13, help="weeks of trace (default 13)")
    parser.add_argument("--eval-weeks", type=int, default=5, help="weeks of rolling origins")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    days = args.weeks * 7
    first_eval = days - args.eval_weeks * 7
    spike_day, holiday = START_DAY + first_eval + 10, START_DAY + first_eval + 21
    records = list(generate_records(args.seed, days, spike_day, holiday))
    series = bucket_hourly(records, start=START_DAY * DAY, end=(START_DAY + days) * DAY)
    oracle = {
        d.name: np.array([daily_expectation(d, START_DAY + i, holiday) for i in range(days)])
        for d in DEPARTMENTS
    }
    rows = collect(series, oracle, first_eval, days - 1)
    summary = summarise(rows, {spike_day - START_DAY, holiday - START_DAY})
    meta = {
        "seed": args.seed,
        "records": len(records),
        "days": days,
        "origins": days - first_eval,
        "spike_day": spike_day - START_DAY,
        "holiday": holiday - START_DAY,
        "holiday_weekday": weekday_of(holiday),
        "interval": 0.8,
    }
    if args.json:
        print(json.dumps({"meta": meta, "summary": summary}, indent=2))
        return
    print(json.dumps(meta))
    print_table(summary)
    if not math.isfinite(summary["day_ahead"]["overall"]["model"]["1-mape"]):
        raise SystemExit("non-finite accuracy")


if __name__ == "__main__":
    main()
