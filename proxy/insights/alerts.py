"""Current alerts for UIs: Alertmanager's active alerts when it is configured, otherwise the
proxy's own threshold state computed from stored usage records and the spend ledger.

The proxy's own state mirrors rules/prometheus/alerts.yml: spend over the last 60 minutes /
24 hours above `alerts:` in departments.yaml (all departments together and each one), a
budget window past a soft threshold or used up, and an open circuit breaker. Spend is read per
minute from the spend store's minute rollups (a request counts at the start of its minute), and
when a budget was reached from its day rollups then the minutes of that day: no raw record is
read."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, overload

import aiohttp
import numpy as np

from proxy.config.departments import Department, DepartmentsConfig, Period, SpendThresholds
from proxy.spend.budgets import BudgetStatus
from proxy.spend.ledger import Ledger
from proxy.spend.pricing import nanos_to_dollars, to_nanos
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import MINUTE

Severity = Literal["critical", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}
HOUR = 3600.0
DAY = 86_400.0
LOOKBACK_S = 2 * DAY  # a rolling 24 h sum and when it crossed its threshold
ALERTMANAGER_TIMEOUT_S = 2.0
SPEND_WINDOWS: tuple[tuple[str, str, float, str], ...] = (
    ("MeterlineHourlySpendHigh", "Hourly", HOUR, "hourly_spend"),
    ("MeterlineDailySpendHigh", "Daily", DAY, "daily_spend"),
)
Events = Sequence[tuple[float, int]]  # (ts, nano-dollars), oldest first


class EventArrays(Sequence[tuple[float, int]]):
    """Events as two numpy arrays, oldest first: what events_of_minutes builds (two days of
    minutes per department on every alerts poll) and rolling_state reads as they are."""

    __slots__ = ("nanos", "ts")

    def __init__(self, ts: np.ndarray, nanos: np.ndarray) -> None:
        self.ts = ts.astype(np.float64)
        self.nanos = nanos.astype(np.int64)

    def __len__(self) -> int:
        return len(self.nanos)

    @overload
    def __getitem__(self, index: int) -> tuple[float, int]: ...

    @overload
    def __getitem__(self, index: slice) -> EventArrays: ...

    def __getitem__(self, index: int | slice) -> tuple[float, int] | EventArrays:
        if isinstance(index, slice):
            return EventArrays(self.ts[index], self.nanos[index])
        return float(self.ts[index]), int(self.nanos[index])

    def __iter__(self) -> Iterator[tuple[float, int]]:
        return zip(self.ts.tolist(), self.nanos.tolist(), strict=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EventArrays({list(self)!r})"


class AlertSourceError(RuntimeError):
    """Alertmanager could not be read (unreachable, timeout, bad status or body)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing alert, the same shape whichever source produced it."""

    name: str
    severity: str
    department: str | None
    value: float | None
    threshold: float | None
    message: str
    since: float | None  # unix seconds the condition became true (None when unknown)
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        since = datetime.fromtimestamp(self.since, UTC).isoformat() if self.since else None
        return {"name": self.name, "severity": self.severity, "department": self.department,
                "value": self.value, "threshold": self.threshold, "message": self.message,
                "since": since, "labels": self.labels}


def money(dollars: float) -> str:
    """$100 for whole dollars, $123.40 from $1 up, down to nano-dollars below ($0.000021)."""
    if dollars == int(dollars):
        return f"${int(dollars):,}"
    if abs(dollars) >= 1:
        return f"${dollars:,.2f}"
    whole, _, fraction = f"{dollars:.6f}".rstrip("0").partition(".")
    return f"${whole}.{fraction:0<2}"


def sort_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.name,
                                         a.department or "", a.since or 0.0))


# ----- rolling windows ------------------------------------------------------------------------

def rolling_state(events: Sequence[tuple[float, int]], window_s: float, threshold: int,
                  now: float) -> tuple[int, float | None]:
    """Sum over (now - window_s, now] and the moment that rolling sum last rose above
    `threshold` (None when it is not above now). Only the events given count: with a lookback
    of two windows, a state older than that shows as starting at the lookback.

    The sum changes where an event enters, and one window later where it leaves; it is judged
    once every change at an instant is applied. In numpy (int64 nano-dollars, exact): the alerts
    judge ten sums over two days of minutes per poll, ~40 ms a poll as a Python loop
    (docs/benchmarks.md)."""
    if not events:
        return 0, None
    if isinstance(events, EventArrays):
        entered, nanos = np.minimum(events.ts, now), events.nanos
    else:
        entered = np.minimum(np.fromiter((ts for ts, _ in events), np.float64, len(events)), now)
        nanos = np.fromiter((n for _, n in events), np.int64, len(events))
    left = entered + window_s <= now
    instants = np.concatenate((entered, entered[left] + window_s))
    order = np.argsort(instants, kind="stable")
    instants = instants[order]
    sums = np.cumsum(np.concatenate((nanos, -nanos[left]))[order])
    judged = np.append(instants[1:] != instants[:-1], True)  # the last change of each instant
    at, totals = instants[judged], sums[judged]
    total = int(totals[-1])
    if total <= threshold:
        return total, None
    not_above = np.flatnonzero(totals <= threshold)
    return total, float(at[not_above[-1] + 1 if not_above.size else 0])


def first_reached(events: Sequence[tuple[float, int]], start: float, mark: int) -> float | None:
    """When the running sum of events from `start` on first reached `mark`."""
    running = 0
    for ts, nanos in events:
        if ts >= start:
            running += nanos
            if running >= mark:
                return ts
    return None


def period_start(period: Period, now: float) -> float:
    if period == "hourly":
        return math.floor(now / HOUR) * HOUR
    if period == "daily":
        return math.floor(now / DAY) * DAY
    moment = datetime.fromtimestamp(now, UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()


def events_of(records: Iterable[UsageRecord]) -> dict[str | None, Events]:
    """Cost events per department, and for all of them under the key None."""
    grouped: dict[str | None, list[tuple[float, int]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.ts):
        nanos = record.cost_nanos
        if nanos > 0:
            grouped[None].append((record.ts, nanos))
            grouped[record.department].append((record.ts, nanos))
    return dict(grouped)


def events_of_minutes(costs: Iterable[tuple[str, int, int]]) -> dict[str | None, Events]:
    """events_of for spend per department and minute (`Ledger.minute_costs`): one event per
    minute. Summed in numpy: two days of minutes are ~12,000 costs on every alerts poll (a dict
    of dicts took ~9 ms of them, 2.7 ms this way; docs/benchmarks.md)."""
    costs = costs if isinstance(costs, list) else list(costs)
    count = len(costs)
    if not count:
        return {}
    names: dict[str, int] = {}
    department = np.fromiter((names.setdefault(c[0], len(names)) for c in costs), np.int64, count)
    minutes = np.fromiter((c[1] for c in costs), np.int64, count)
    nanos = np.fromiter((c[2] for c in costs), np.int64, count)
    grouped: dict[str | None, Events] = {}
    for name, chosen in [(None, None), *names.items()]:
        picked = slice(None) if chosen is None else department == chosen
        events = _per_minute(minutes[picked], nanos[picked])
        if len(events):
            grouped[name] = events
    return grouped


def _per_minute(minutes: np.ndarray, nanos: np.ndarray) -> EventArrays:
    """The nano-dollars of each minute summed, oldest first, minutes with spend only."""
    order = np.argsort(minutes, kind="stable")
    minutes, nanos = minutes[order], nanos[order]
    first = np.flatnonzero(np.r_[True, minutes[1:] != minutes[:-1]])
    sums = np.add.reduceat(nanos, first)
    spent = sums > 0
    return EventArrays(minutes[first][spent], sums[spent])


async def reached_at(ledger: Ledger, department: str, start: float, mark: int,
                     now: float) -> float | None:
    """first_reached from `start` (a period's start: a whole hour) for the minute events of
    `department`: the day (or hour) bucket the running sum reaches `mark` in from the rollups,
    then the minute within it."""
    buckets: dict[float, int] = defaultdict(int)
    for part in await ledger.usage(start, now + 1.0, department, "coarse", "d"):
        buckets[part.start] += part.cost_nanos
    before = 0
    for bucket, nanos in sorted(buckets.items()):
        if before + nanos >= mark:
            costs = await ledger.minute_costs(int(bucket), int(bucket + DAY))
            events = events_of_minutes(c for c in costs if c[0] == department).get(department, [])
            return first_reached([(bucket, before), *events], bucket, mark) if before \
                else first_reached(events, bucket, mark)
        before += nanos
    return None


# ----- spend thresholds -----------------------------------------------------------------------

def spend_alerts(events: dict[str | None, Events], config: DepartmentsConfig,
                 now: float) -> list[Alert]:
    """Hourly / daily spend above its threshold, in total and per department."""
    scopes: list[tuple[str | None, SpendThresholds]] = [(None, config.alerts)]
    scopes += [(name, config.alerts.for_department(name))
               for name in sorted(set(config.names) | {d for d in events if d is not None})]
    found: list[Alert] = []
    for department, thresholds in scopes:
        for name, label, window_s, attr in SPEND_WINDOWS:
            limit: Decimal | None = getattr(thresholds, attr)
            if limit is None:
                continue
            alert = _spend_alert(name, label, window_s, limit, department,
                                 events.get(department, []), now)
            if alert is not None:
                found.append(alert)
    return found


def _spend_alert(name: str, label: str, window_s: float, limit: Decimal, department: str | None,
                 events: Events, now: float) -> Alert | None:
    threshold = to_nanos(limit)
    total, since = rolling_state(events, window_s, threshold, now)
    if total <= threshold:
        return None
    value, ceiling = nanos_to_dollars(total), float(limit)
    who = f"{department}: " if department else ""
    message = f"{who}{label} spend exceeded threshold: {money(value)} / {money(ceiling)}"
    labels = {"scope": "department" if department else "total"}
    return Alert(name, "warning", department, value, ceiling, message, since, labels)


# ----- budgets and the circuit breaker --------------------------------------------------------

def budget_state(status: BudgetStatus, dept: Department) -> tuple[bool, float, int] | None:
    """(exhausted, highest soft threshold passed, the mark in nano-dollars whose crossing is the
    alert's start), or None: neither used up nor past a soft threshold."""
    limit, spent = status.limit_dollars, status.spent_dollars
    held = to_nanos(spent) + to_nanos(status.reserved_dollars)
    exhausted = held >= to_nanos(limit)  # like the ledger, holds count: nothing more fits
    passed = [t for t in dept.soft_alerts if spent >= t * limit]
    if not exhausted and not passed:
        return None
    fraction = max(passed, default=1.0)
    return exhausted, fraction, to_nanos(limit if exhausted else limit * fraction)


def budget_alert(status: BudgetStatus, dept: Department, events: Events,
                 now: float) -> Alert | None:
    """A budget window used up, counting held reservations like the ledger does (critical),
    or past the highest soft threshold its spend crossed (warning)."""
    state = budget_state(status, dept)
    if state is None:
        return None
    return budget_alert_since(status, dept, state,
                              first_reached(events, period_start(status.period, now), state[2]))


def budget_alert_since(status: BudgetStatus, dept: Department,
                       state: tuple[bool, float, int], since: float | None) -> Alert:
    limit, spent = status.limit_dollars, status.spent_dollars
    exhausted, fraction, _ = state
    label = status.period.capitalize()
    labels: dict[str, str] = {"period": status.period}
    if exhausted:
        message = f"{dept.name}: {label} budget exhausted: {money(spent)} / {money(limit)}"
        return Alert("MeterlineBudgetExhausted", "critical", dept.name, spent, limit, message,
                     since, labels)
    mark = limit * fraction
    message = (f"{dept.name}: {label} budget {fraction:.0%} used: "
               f"{money(spent)} / {money(limit)}")
    return Alert("MeterlineBudgetSoftThreshold", "warning", dept.name, spent, round(mark, 6),
                 message, since, {**labels, "soft_threshold": f"{fraction:g}"})


def breaker_alert(dept: Department, events: Events, now: float) -> Alert:
    """The department is paused: its spend over the breaker window passed max_dollars."""
    breaker = dept.circuit_breaker
    assert breaker is not None
    window_s, ceiling = breaker.window_minutes * 60.0, float(breaker.max_dollars)
    total, since = rolling_state(events, window_s, to_nanos(breaker.max_dollars), now)
    value = nanos_to_dollars(total)
    message = (f"{dept.name}: circuit breaker open: {money(value)} in "
               f"{breaker.window_minutes} min / {money(ceiling)}; requests are refused")
    return Alert("MeterlineCircuitBreakerOpen", "critical", dept.name, value, ceiling, message,
                 since)


def lookback_start(now: float) -> int:
    return math.floor((now - LOOKBACK_S) / MINUTE) * MINUTE


async def proxy_alerts(ledger: Ledger, config: DepartmentsConfig, now: float) -> list[Alert]:
    """The proxy's own threshold state from the minute rollups and the ledger."""
    costs = await ledger.minute_costs(lookback_start(now),
                                      math.floor(now / MINUTE) * MINUTE + MINUTE)
    # ~12,000 minutes in the benchmark: grouped and summed off the event loop
    events, found = await asyncio.to_thread(_spend_state, costs, config, now)
    for name in config.names:
        dept = config.get(name)
        found += await _department_alerts(ledger, dept, events.get(name, []), now)
    return sort_alerts(found)


def _spend_state(costs: list[tuple[str, int, int]], config: DepartmentsConfig,
                 now: float) -> tuple[dict[str | None, Events], list[Alert]]:
    events = events_of_minutes(costs)
    return events, spend_alerts(events, config, now)


async def _department_alerts(ledger: Ledger, dept: Department, events: Events,
                             now: float) -> list[Alert]:
    found: list[Alert] = []
    for status in await ledger.budget_status(dept.name):
        state = budget_state(status, dept)
        if state is None:
            continue
        start = period_start(status.period, now)
        since = first_reached(events, start, state[2]) if start >= lookback_start(now) \
            else await reached_at(ledger, dept.name, start, state[2], now)
        found.append(budget_alert_since(status, dept, state, since))
    if dept.circuit_breaker is not None and await ledger.is_paused(dept.name):
        found.append(breaker_alert(dept, events, now))
    return found


# ----- Alertmanager ---------------------------------------------------------------------------

async def alertmanager_alerts(base_url: str,
                              timeout_s: float = ALERTMANAGER_TIMEOUT_S) -> list[Alert]:
    """Active alerts that are neither silenced nor inhibited, from Alertmanager's API v2."""
    url = base_url.rstrip("/") + "/api/v2/alerts"
    params = {"active": "true", "silenced": "false", "inhibited": "false"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.get(url, params=params) as response:
                if response.status != 200:
                    raise AlertSourceError(f"{url} answered HTTP {response.status}")
                payload = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AlertSourceError(f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
    if not isinstance(payload, list):
        raise AlertSourceError(f"{url} returned {type(payload).__name__}, expected a list")
    return sort_alerts(from_alertmanager(item) for item in payload)


def from_alertmanager(item: Any) -> Alert:
    if not isinstance(item, dict) or not isinstance(item.get("labels"), dict):
        raise AlertSourceError(f"Alertmanager alert without labels: {item!r:.200}")
    labels = {str(k): str(v) for k, v in item["labels"].items()}
    notes = item.get("annotations")
    notes = notes if isinstance(notes, dict) else {}
    name = labels.get("alertname", "Alert")
    severity = labels.get("severity", "info")
    message = str(notes.get("summary") or notes.get("description") or name)
    return Alert(name, severity if severity in SEVERITY_ORDER else "info",
                 labels.get("department"), None, None, message,
                 _parse_time(item.get("startsAt")), labels)


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
