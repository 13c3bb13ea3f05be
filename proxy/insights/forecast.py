"""Spend forecasts and budget recommendations from stored per-request usage records.

Method, per department, on UTC daily totals of the last ``MAX_HISTORY_DAYS`` complete days:

1. day-of-week factors: median over recent weeks of (day total / centred 7-day mean), so one
   spike or holiday moves a single sample, not the profile;
2. level and trend: Theil-Sen line (median of pairwise slopes) through the de-seasonalised
   totals of the last ``TREND_DAYS`` days;
3. forecast(day) = (level + slope * days ahead) * factor[weekday];
4. interval: empirical quantiles of actual/forecast from a rolling-origin backtest on the
   department's own history (no normality assumption).

An hour-of-week profile (median hourly shares per weekday) gives the peak hours and how much of
today is still to come. Short histories fall back to simpler methods, named in ``method``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

HOUR = 3600
DAY = 86400
MAX_HISTORY_DAYS = 56
TREND_DAYS = 28
BACKTEST_ORIGINS = 28
MIN_BACKTEST_FIT_DAYS = 14
MIN_RESIDUALS = 5
DEFAULT_RELATIVE_WIDTH = 0.5
PEAK_SLOTS = 5
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def weekday_of(day: int) -> int:
    """Monday=0 weekday of a day number counted from 1970-01-01 (a Thursday)."""
    return (day + 3) % 7


def iso_date(day: int) -> str:
    return datetime.fromtimestamp(day * DAY, UTC).date().isoformat()


@dataclass(frozen=True)
class HourlySeries:
    """Spend per department in UTC hour buckets starting at ``first_day`` midnight."""

    first_day: int
    n_days: int
    by_department: dict[str, FloatArray]

    def hourly(self, department: str) -> FloatArray:
        empty = np.zeros(self.n_days * 24)
        return self.by_department.get(department, empty)


def _record_fields(record: Any) -> tuple[float, str, float]:
    if isinstance(record, Mapping):
        return float(record["ts"]), str(record["department"]), float(record["cost"])
    return float(record.ts), str(record.department), float(record.cost)


def bucket_hourly(
    records: Iterable[Any], start: float | None = None, end: float | None = None
) -> HourlySeries:
    """Sum ``cost`` per department per UTC hour for records with start <= ts < end.

    Records are mappings or objects with ``ts`` (unix seconds), ``department`` and ``cost``
    (dollars). The buckets cover whole UTC days from the day of ``start`` to the day of ``end``.
    """
    codes: dict[str, int] = {}
    fields = [_record_fields(r) for r in records]
    stamps = np.array([f[0] for f in fields], dtype=np.float64)
    costs = np.array([f[2] for f in fields], dtype=np.float64)
    which = np.array([codes.setdefault(f[1], len(codes)) for f in fields], dtype=np.int64)
    if start is None:
        start = float(stamps.min()) if len(stamps) else 0.0
    if end is None:
        end = float(stamps.max()) + 1.0 if len(stamps) else start
    first_day = math.floor(start / DAY)
    n_days = max(0, math.ceil(end / DAY) - first_day)
    n_hours = n_days * 24
    keep = (stamps >= start) & (stamps < end)
    hours = np.floor(stamps[keep] / HOUR).astype(np.int64) - first_day * 24
    flat = which[keep] * n_hours + hours
    sums = np.bincount(flat, weights=costs[keep], minlength=len(codes) * n_hours)
    grid = sums.astype(np.float64).reshape(len(codes), n_hours)
    series = {name: grid[code] for name, code in sorted(codes.items())}
    return HourlySeries(first_day=first_day, n_days=n_days, by_department=series)


@dataclass(frozen=True)
class _Model:
    method: str
    factors: FloatArray
    level: float
    slope: float
    last_day: int

    def predict(self, day: int) -> float:
        value = (self.level + self.slope * (day - self.last_day)) * self.factors[weekday_of(day)]
        return max(0.0, float(value))


def _weekday_factors(daily: FloatArray, first_day: int) -> FloatArray:
    n = len(daily)
    weekdays = np.array([weekday_of(first_day + i) for i in range(n)])
    if n >= 21:
        base = np.convolve(daily, np.ones(7) / 7, mode="valid")
        ratios_of, days_of = daily[3 : n - 3], weekdays[3 : n - 3]
    else:
        base = np.full(n, daily.mean())
        ratios_of, days_of = daily, weekdays
    valid = base > 0
    ratios = np.divide(ratios_of, base, out=np.zeros_like(base), where=valid)
    factors = np.ones(7)
    for weekday in range(7):
        chosen = ratios[valid & (days_of == weekday)]
        if len(chosen):
            factors[weekday] = _robust_mean(chosen)
    total = factors.sum()
    return factors * 7 / total if total > 0 else np.ones(7)


def _robust_mean(values: FloatArray) -> float:
    """Mean without the lowest and highest fifth: spike/holiday-proof, less noisy than a median."""
    ordered = np.sort(values)
    cut = int(len(ordered) * 0.2) if len(ordered) >= 5 else 0
    return float(ordered[cut : len(ordered) - cut].mean())


def _theil_sen(t: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Robust line; returns (value at t[-1], slope)."""
    if len(y) < 2:
        return (float(y[-1]) if len(y) else 0.0), 0.0
    i, j = np.triu_indices(len(y), 1)
    slope = float(np.median((y[j] - y[i]) / (t[j] - t[i])))
    intercept = _robust_mean(y - slope * t)
    return intercept + slope * float(t[-1]), slope


def fit_daily(daily: FloatArray, first_day: int) -> _Model:
    """Fit the forecast model on complete daily totals starting at ``first_day``."""
    n = len(daily)
    last_day = first_day + n - 1
    if n == 0:
        return _Model("no-history", np.ones(7), 0.0, 0.0, last_day)
    if not np.any(daily > 0):
        return _Model("no-spend", np.ones(7), 0.0, 0.0, last_day)
    if n < 7:
        return _Model("daily-mean", np.ones(7), float(daily.mean()), 0.0, last_day)
    factors = _weekday_factors(daily, first_day)
    seasonal = np.array([factors[weekday_of(first_day + i)] for i in range(n)])
    usable = seasonal > 1e-6
    z = np.divide(daily, seasonal, out=np.zeros(n), where=usable)
    t = np.arange(n, dtype=np.float64)
    if n < 14:
        return _Model("weekly-profile", factors, float(np.median(z[usable])), 0.0, last_day)
    recent = usable & (t >= n - TREND_DAYS)
    level, slope = _theil_sen(t[recent], z[recent])
    level = level + slope * (n - 1 - float(t[recent][-1]))
    return _Model("weekly-profile+trend", factors, level, slope, last_day)


@dataclass(frozen=True)
class _Residuals:
    daily: FloatArray
    period: FloatArray
    source: str


def _backtest_ratios(daily: FloatArray, first_day: int, horizon: int) -> _Residuals:
    """actual / forecast ratios from rolling origins inside the history."""
    n = len(daily)
    per_day: list[float] = []
    per_period: list[float] = []
    for origin in range(max(MIN_BACKTEST_FIT_DAYS, n - BACKTEST_ORIGINS), n):
        model = fit_daily(daily[:origin], first_day)
        steps = min(horizon, n - origin)
        predicted = np.array([model.predict(first_day + origin + h) for h in range(steps)])
        actual = daily[origin : origin + steps]
        ok = predicted > 0
        per_day.extend((actual[ok] / predicted[ok]).tolist())
        if steps == horizon and predicted.sum() > 0:
            per_period.append(float(actual.sum() / predicted.sum()))
    if len(per_day) >= MIN_RESIDUALS:
        return _Residuals(np.array(per_day), np.array(per_period), "rolling-origin backtest")
    model = fit_daily(daily, first_day)
    fitted = np.array([model.predict(first_day + i) for i in range(n)])
    ok = fitted > 0
    in_sample = daily[ok] / fitted[ok]
    if len(in_sample) >= MIN_RESIDUALS:
        return _Residuals(in_sample, np.array([]), "in-sample residuals (short history)")
    width = np.array([1 - DEFAULT_RELATIVE_WIDTH, 1 + DEFAULT_RELATIVE_WIDTH])
    return _Residuals(
        width, np.array([]), f"default ±{DEFAULT_RELATIVE_WIDTH:.0%} (too little data)"
    )


def _quantiles(ratios: FloatArray, interval: float) -> tuple[float, float]:
    low, high = np.quantile(ratios, [(1 - interval) / 2, (1 + interval) / 2])
    return min(float(low), 1.0), max(float(high), 1.0)


def hour_profile(hourly: FloatArray, first_day: int) -> FloatArray:
    """(7, 24) median share of each UTC hour within its day, per weekday; rows sum to 1."""
    days = hourly.reshape(-1, 24)
    totals = days.sum(axis=1)
    valid = totals > 0
    shares = days[valid] / totals[valid, None]
    weekdays = np.array([weekday_of(first_day + i) for i in range(len(days))])[valid]
    overall = np.median(shares, axis=0) if len(shares) else np.full(24, 1 / 24)
    profile = np.tile(overall, (7, 1))
    for weekday in range(7):
        if np.any(weekdays == weekday):
            profile[weekday] = np.median(shares[weekdays == weekday], axis=0)
    sums = profile.sum(axis=1, keepdims=True)
    normalised: FloatArray = np.divide(
        profile, sums, out=np.full_like(profile, 1 / 24), where=sums > 0
    )
    return normalised


@dataclass(frozen=True)
class PeakHour:
    weekday: str | None
    hour_utc: int
    share: float


@dataclass(frozen=True)
class DayForecast:
    date: str
    expected: float
    low: float
    high: float


@dataclass(frozen=True)
class DepartmentForecast:
    department: str
    method: str
    history_days: int
    interval_method: str
    days: list[DayForecast]
    total: DayForecast
    peak_hours: list[PeakHour]


def _peak_hours(model: _Model, profile: FloatArray) -> list[PeakHour]:
    if model.method == "no-spend":
        return []
    if model.method in ("no-history", "daily-mean"):
        by_hour = profile.mean(axis=0)
        order = np.argsort(-by_hour, kind="stable")[:PEAK_SLOTS]
        return [PeakHour(None, int(h), round(float(by_hour[h]), 4)) for h in order]
    weekly = profile * model.factors[:, None]
    weekly = weekly / weekly.sum() if weekly.sum() > 0 else weekly
    order = np.argsort(-weekly.ravel(), kind="stable")[:PEAK_SLOTS]
    return [
        PeakHour(WEEKDAYS[i // 24], int(i % 24), round(float(weekly.ravel()[i]), 4)) for i in order
    ]


def _elapsed_share(profile: FloatArray, weekday: int, seconds_into_day: float) -> float:
    hours = seconds_into_day / HOUR
    whole = int(hours)
    row = profile[weekday]
    partial = float(row[whole]) * (hours - whole) if whole < 24 else 0.0
    return float(row[:whole].sum()) + partial


def round_cents(value: float) -> float:
    return round(value + 0.0, 2)


def _history(hourly: FloatArray, first_day: int, now: float) -> tuple[int, FloatArray, float]:
    """(first history day, complete days' hourly spend, spend so far today).

    History starts at the department's first day with spend, so a department created last
    week is a one-week history rather than seven weeks of zeros."""
    today = math.floor(now / DAY)
    start = max(first_day, today - MAX_HISTORY_DAYS)
    complete = hourly[(start - first_day) * 24 : (today - first_day) * 24]
    spent = np.flatnonzero(complete.reshape(-1, 24).sum(axis=1) > 0)
    if len(spent):
        start, complete = start + int(spent[0]), complete[int(spent[0]) * 24 :]
    now_index = math.floor(now / HOUR) - first_day * 24
    observed = float(hourly[(today - first_day) * 24 : max(0, now_index)].sum())
    return start, complete, observed + _partial_hour(hourly, first_day, now)


def forecast_department(
    department: str,
    hourly: FloatArray | None,
    first_day: int,
    now: float,
    horizon: int,
    interval: float,
) -> DepartmentForecast:
    """Forecast one department from its hourly spend (hours at or after ``now`` are ignored).

    ``hourly`` is None for a department that has no records at all."""
    today = math.floor(now / DAY)
    if hourly is None:
        history_start, complete, observed_today = today, np.zeros(0), 0.0
    else:
        history_start, complete, observed_today = _history(hourly, first_day, now)
    daily = complete.reshape(-1, 24).sum(axis=1)
    model = fit_daily(daily, history_start)
    profile = hour_profile(complete, history_start)
    residuals = _backtest_ratios(daily, history_start, horizon)
    quantiles = _quantiles(residuals.daily, interval)
    remaining_today = 1.0 - _elapsed_share(profile, weekday_of(today), now - today * DAY)
    predicted = [model.predict(today + h) for h in range(horizon)]
    predicted[0] *= remaining_today
    days = [_band(iso_date(today + h), 0.0, p, quantiles) for h, p in enumerate(predicted)]
    days[0] = _band(days[0].date, observed_today, predicted[0], quantiles)
    label = f"{iso_date(today)}/{iso_date(today + horizon - 1)}"
    if len(residuals.period) >= MIN_RESIDUALS:
        total = _band(label, observed_today, sum(predicted), _quantiles(residuals.period, interval))
    else:  # summing daily bounds assumes errors move together: conservative
        sums = [round_cents(sum(getattr(d, key) for d in days))
                for key in ("expected", "low", "high")]
        total = DayForecast(label, *sums)
    peaks = _peak_hours(model, profile)
    return DepartmentForecast(
        department, model.method, len(daily), residuals.source, days, total, peaks
    )


def _band(label: str, done: float, predicted: float, quantiles: tuple[float, float]) -> DayForecast:
    """Spend already recorded plus the predicted rest, scaled by the error quantiles."""
    low_q, high_q = quantiles
    return DayForecast(
        label,
        round_cents(done + predicted),
        round_cents(done + predicted * low_q),
        round_cents(done + predicted * high_q),
    )


def _partial_hour(hourly: FloatArray, first_day: int, now: float) -> float:
    """Spend already recorded in the current (incomplete) hour."""
    index = math.floor(now / HOUR) - first_day * 24
    return float(hourly[index]) if 0 <= index < len(hourly) and now % HOUR > 0 else 0.0


def _validate(horizon_days: int, interval: float) -> None:
    if not 1 <= horizon_days <= 92:
        raise ValueError(f"'horizon_days' has value {horizon_days!r}. Must be 1..92.")
    if not 0 < interval < 1:
        raise ValueError(f"'interval' has value {interval!r}. Must be between 0 and 1.")


def forecast_series(
    series: HourlySeries,
    now: float,
    horizon_days: int,
    interval: float = 0.8,
    departments: Iterable[str] = (),
) -> dict[str, Any]:
    """Forecast every department in ``series`` (plus ``departments``) from ``now`` on."""
    _validate(horizon_days, interval)
    names = sorted(set(series.by_department) | set(departments))
    forecasts = [
        forecast_department(
            name, series.by_department.get(name), series.first_day, now, horizon_days, interval
        )
        for name in names
    ]
    today = math.floor(now / DAY)
    totals = [
        DayForecast(
            iso_date(today + h),
            *(
                round_cents(sum(getattr(f.days[h], key) for f in forecasts))
                for key in ("expected", "low", "high")
            ),
        )
        for h in range(horizon_days)
    ]
    return {
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "horizon_days": horizon_days,
        "interval": interval,
        "departments": [asdict(f) for f in forecasts],
        "totals": {
            "days": [asdict(d) for d in totals],
            "note": "department bounds are summed, so the total interval is conservative",
        },
    }


def forecast_spend(
    records: Iterable[Any],
    now: float,
    horizon_days: int,
    interval: float = 0.8,
    departments: Iterable[str] = (),
) -> dict[str, Any]:
    """Expected daily spend per department for ``horizon_days`` UTC days starting today.

    Today's figure is spend recorded so far plus the forecast for the rest of the day. Bounds
    are the central ``interval`` (default 80 %) of backtest errors. JSON-ready dict.
    """
    _validate(horizon_days, interval)
    start = (math.floor(now / DAY) - MAX_HISTORY_DAYS) * DAY
    series = bucket_hourly(records, start=start, end=now)
    return forecast_series(series, now, horizon_days, interval, departments)
