"""The proxy's own alert state and Alertmanager's (proxy/insights/alerts.py), unit by unit:
money formatting, rolling windows, spend/breaker alerts, and reading Alertmanager's API.
End-to-end alert paths are in tests/insights/test_api.py and test_alerts_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.config.departments import DepartmentsConfig, parse_departments
from proxy.insights.alerts import (
    DAY,
    HOUR,
    Alert,
    AlertSourceError,
    EventArrays,
    alertmanager_alerts,
    breaker_alert,
    budget_alert,
    events_of,
    events_of_minutes,
    first_reached,
    from_alertmanager,
    lookback_start,
    money,
    period_start,
    proxy_alerts,
    rolling_state,
    sort_alerts,
    spend_alerts,
)
from proxy.spend.budgets import BudgetExhausted, CircuitOpen
from proxy.spend.ledger import Ledger
from proxy.spend.records import UsageRecord
from tests.spend.test_rollups import no_raw_records
from tests.spend_helpers import FakeClock, StoreFactory

NANO = 1_000_000_000
NOW = datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC).timestamp()


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("dollars", "shown"), [
    (100.0, "$100"), (0.0, "$0"), (1_234_567.0, "$1,234,567"), (123.4, "$123.40"),
    (1.005, "$1.00"), (1_234.5, "$1,234.50"), (0.5, "$0.50"), (0.000021, "$0.000021"),
    (0.1234567, "$0.123457"), (0.01, "$0.01"),
])
def test_money(dollars: float, shown: str) -> None:
    assert money(dollars) == shown


def alert(name: str, severity: str, department: str | None = None,
          since: float | None = None) -> Alert:
    return Alert(name, severity, department, None, None, name, since)


def test_sort_alerts_by_severity_then_name_department_and_start() -> None:
    alerts = [alert("B", "info"), alert("A", "warning", "sales"), alert("A", "warning", None),
              alert("Z", "critical"), alert("A", "weird"), alert("A", "warning", "eng", 5.0),
              alert("A", "warning", "eng", 1.0)]
    order = [(a.name, a.severity, a.department, a.since) for a in sort_alerts(alerts)]
    assert order == [("Z", "critical", None, None), ("A", "warning", None, None),
                     ("A", "warning", "eng", 1.0), ("A", "warning", "eng", 5.0),
                     ("A", "warning", "sales", None), ("B", "info", None, None),
                     ("A", "weird", None, None)]


def test_alert_to_dict_shows_since_in_iso_utc() -> None:
    shown = Alert("X", "warning", "eng", 1.5, 1.0, "m", NOW, {"scope": "department"}).to_dict()
    assert shown == {"name": "X", "severity": "warning", "department": "eng", "value": 1.5,
                     "threshold": 1.0, "message": "m", "since": "2025-06-15T15:06:40+00:00",
                     "labels": {"scope": "department"}}
    assert alert("X", "info").to_dict()["since"] is None


# -- rolling windows -------------------------------------------------------------------------

def test_rolling_state_edges() -> None:
    assert rolling_state([], 3600, 0, NOW) == (0, None)
    assert rolling_state([(NOW - 10, 5)], 3600, 5, NOW) == (5, None)  # equal is not above
    assert rolling_state([(NOW - 10, 6)], 3600, 5, NOW) == (6, NOW - 10)
    # an event exactly one window old has left it
    assert rolling_state([(NOW - 3600, 6)], 3600, 5, NOW) == (0, None)
    assert rolling_state([(NOW - 3599, 6)], 3600, 5, NOW) == (6, NOW - 3599)


def sorted_rolling_state(events: list[tuple[float, int]], window_s: float, threshold: int,
                         now: float) -> tuple[int, float | None]:
    """rolling_state by its definition: every change sorted, the sum judged per instant."""
    deltas = sorted([(min(ts, now), 1, nanos) for ts, nanos in events]
                    + [(min(ts, now) + window_s, 0, -nanos) for ts, nanos in events
                       if min(ts, now) + window_s <= now])
    total, since = 0, None
    for i, (at, _, delta) in enumerate(deltas):
        total += delta
        if i + 1 < len(deltas) and deltas[i + 1][0] == at:
            continue
        since = None if total <= threshold else (at if since is None else since)
    return total, since


@pytest.mark.parametrize("seed", range(40))
def test_rolling_state_equals_its_definition(seed: int) -> None:
    """Random events (ties, events after `now`, unsorted, exactly one window apart) give the
    sum and start the sorted definition gives."""
    rng = random.Random(seed)
    window = rng.choice([60.0, 600.0, 3600.0])
    times = [NOW - rng.choice([0, 60, 120, window, 2 * window, 3 * window]) - rng.randrange(4) * 60
             for _ in range(rng.randrange(0, 60))] + [NOW + 30] * rng.randrange(2)
    events = [(ts_, rng.randrange(0, 5)) for ts_ in times]
    if rng.random() < 0.5:
        events.sort()
    threshold = rng.randrange(0, 12)
    expected = sorted_rolling_state(events, window, threshold, NOW)
    assert rolling_state(events, window, threshold, NOW) == expected
    arrays = EventArrays(np.array([t for t, _ in sorted(events)], dtype=np.float64),
                         np.array([n for _, n in sorted(events)], dtype=np.int64))
    assert rolling_state(arrays, window, threshold, NOW) == expected  # as the alerts pass them


@pytest.mark.parametrize("seed", range(10))
def test_events_of_minutes_equals_summing_in_dicts(seed: int) -> None:
    rng = random.Random(seed)
    costs = [(rng.choice(["eng", "sales", "ops"]), rng.randrange(50) * 60, rng.randrange(0, 4))
             for _ in range(rng.randrange(0, 300))]
    expected: dict[str | None, dict[int, int]] = {}
    for name, minute, nanos in costs:
        for scope in (None, name):
            expected.setdefault(scope, {}).setdefault(minute, 0)
            expected[scope][minute] += nanos
    wanted = {scope: [(m, n) for m, n in sorted(minutes.items()) if n > 0]
              for scope, minutes in expected.items()}
    assert events_of_minutes(costs) == {k: v for k, v in wanted.items() if v}


def test_first_reached() -> None:
    events = [(10.0, 3), (20.0, 3), (30.0, 3)]
    assert first_reached(events, 0.0, 6) == 20.0
    assert first_reached(events, 15.0, 6) == 30.0  # earlier events are before the period
    assert first_reached(events, 0.0, 100) is None
    assert first_reached([], 0.0, 0) is None


@pytest.mark.parametrize(("period", "start"), [
    ("hourly", "2025-06-15T15:00:00"), ("daily", "2025-06-15T00:00:00"),
    ("monthly", "2025-06-01T00:00:00"),
])
def test_period_start(period: str, start: str) -> None:
    assert period_start(period, NOW) == ts(start)  # type: ignore[arg-type]


def record(request_id: str, ts_: float, department: str, cost_nanos: int) -> UsageRecord:
    return UsageRecord(request_id=request_id, ts=ts_, department=department, key_id="k",
                       user=None, endpoint="chat.completions", model_requested="m",
                       model_used="m", provider="p", status=200, cost_nanos=cost_nanos)


def test_events_of_groups_costs_by_department_and_in_total_oldest_first() -> None:
    events = events_of([record("b", 20.0, "eng", 2), record("a", 10.0, "sales", 1),
                        record("free", 15.0, "eng", 0), record("c", 30.0, "eng", 3)])
    assert events == {None: [(10.0, 1), (20.0, 2), (30.0, 3)], "sales": [(10.0, 1)],
                      "eng": [(20.0, 2), (30.0, 3)]}
    assert events_of([]) == {}


def test_events_of_minutes_sums_per_department_and_minute_oldest_first() -> None:
    costs = [("eng", 120, 2), ("sales", 60, 1), ("eng", 60, 4), ("eng", 120, 3), ("ops", 0, 0),
             ("sales", 0, 5)]
    assert events_of_minutes(costs) == {None: [(0, 5), (60, 5), (120, 5)],
                                        "sales": [(0, 5), (60, 1)], "eng": [(60, 4), (120, 5)]}
    assert events_of_minutes([]) == {}


# -- spend and breaker alerts ----------------------------------------------------------------

CONFIG = parse_departments({
    "departments": {"eng": {}, "sales": {}, "ops": {
        "circuit_breaker": {"window_minutes": 10, "max_dollars": 5}}},
    "alerts": {"hourly_spend": 10, "daily_spend": 100,
               "departments": {"sales": {"hourly_spend": 2}, "ops": {"hourly_spend": None}}},
})


def test_spend_alerts_in_total_and_per_department_with_overrides() -> None:
    events = {None: [(NOW - 60, 11 * NANO)], "eng": [(NOW - 60, 8 * NANO)],
              "sales": [(NOW - 60, 3 * NANO)], "ops": [(NOW - 60, 50 * NANO)]}
    found = {(a.name, a.department): a for a in spend_alerts(events, CONFIG, NOW)}
    assert set(found) == {("MeterlineHourlySpendHigh", None),
                          ("MeterlineHourlySpendHigh", "sales")}
    total = found[("MeterlineHourlySpendHigh", None)]
    assert (total.severity, total.value, total.threshold, total.since) == (
        "warning", 11.0, 10.0, NOW - 60)
    assert total.message == "Hourly spend exceeded threshold: $11 / $10"
    assert total.labels == {"scope": "total"}
    sales = found[("MeterlineHourlySpendHigh", "sales")]
    assert sales.message == "sales: Hourly spend exceeded threshold: $3 / $2"
    assert sales.labels == {"scope": "department"}


def test_daily_spend_alert_counts_a_rolling_24_hours() -> None:
    events: dict[str | None, list[tuple[float, int]]] = {
        None: [(NOW - 20 * 3600, 60 * NANO), (NOW - 2 * 3600, 50 * NANO)]}
    names = [(a.name, a.since) for a in spend_alerts(events, CONFIG, NOW)]
    assert names == [("MeterlineDailySpendHigh", NOW - 2 * 3600)]


def test_departments_only_seen_in_records_get_the_default_thresholds() -> None:
    events = {None: [(NOW, 1)], "retired": [(NOW - 1, 12 * NANO)]}
    found = [(a.name, a.department) for a in spend_alerts(events, CONFIG, NOW)]
    assert found == [("MeterlineHourlySpendHigh", "retired")]


def test_breaker_alert() -> None:
    ops = CONFIG.get("ops")
    found = breaker_alert(ops, [(NOW - 900, NANO), (NOW - 120, 6 * NANO)], NOW)
    assert (found.name, found.severity, found.department) == (
        "MeterlineCircuitBreakerOpen", "critical", "ops")
    assert (found.value, found.threshold, found.since) == (6.0, 5.0, NOW - 120)
    assert found.message == ("ops: circuit breaker open: $6 in 10 min / $5; "
                             "requests are refused")


# -- Alertmanager ----------------------------------------------------------------------------

def test_from_alertmanager() -> None:
    item = {"labels": {"alertname": "MeterlineBudgetExhausted", "severity": "critical",
                       "department": "sales", "period": "day"},
            "annotations": {"summary": "sales used its budget", "description": "long"},
            "startsAt": "2025-06-15T15:06:40.123Z"}
    found = from_alertmanager(item)
    assert (found.name, found.severity, found.department, found.message) == (
        "MeterlineBudgetExhausted", "critical", "sales", "sales used its budget")
    assert found.since == pytest.approx(NOW + 0.123)
    assert found.labels["period"] == "day"


@pytest.mark.parametrize(("item", "expected"), [
    ({"labels": {}}, ("Alert", "info", None, "Alert", None)),
    ({"labels": {"alertname": "X", "severity": "page"}, "annotations": "bad",
      "startsAt": "yesterday"}, ("X", "info", None, "X", None)),
    ({"labels": {"alertname": "X", "severity": "warning", "port": 80},
      "annotations": {"description": "d"}, "startsAt": 5},
     ("X", "warning", None, "d", None)),
])
def test_from_alertmanager_fills_in_what_is_missing(item: dict[str, Any],
                                                    expected: tuple[Any, ...]) -> None:
    found = from_alertmanager(item)
    assert (found.name, found.severity, found.department, found.message, found.since) == expected
    assert all(isinstance(v, str) for v in found.labels.values())


@pytest.mark.parametrize("item", [None, "alert", [], {"labels": None}, {"labels": ["a"]}, {}])
def test_from_alertmanager_rejects_alerts_without_labels(item: Any) -> None:
    with pytest.raises(AlertSourceError, match="Alertmanager alert without labels"):
        from_alertmanager(item)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/api/v2/alerts", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


async def test_alertmanager_alerts_asks_for_active_unsilenced_alerts(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(request.query)
        return web.json_response([
            {"labels": {"alertname": "B", "severity": "warning"}},
            {"labels": {"alertname": "A", "severity": "critical"}}])

    url = await serve(handler)
    found = await alertmanager_alerts(url + "/")
    assert [a.name for a in found] == ["A", "B"]
    assert seen == {"active": "true", "silenced": "false", "inhibited": "false"}


@pytest.mark.parametrize(("status", "body", "message"), [
    (503, "[]", "answered HTTP 503"),
    (200, '{"alerts": []}', "returned dict, expected a list"),
    (200, "not json", "JSONDecodeError"),
    (200, '[{"no": "labels"}]', "Alertmanager alert without labels"),
])
async def test_alertmanager_alerts_errors(serve: Callable[[Handler], Awaitable[str]], status: int,
                                          body: str, message: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=body, content_type="application/json")

    url = await serve(handler)
    with pytest.raises(AlertSourceError, match=message):
        await alertmanager_alerts(url)


async def test_unreachable_alertmanager_is_an_alert_source_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AlertSourceError, match=f"http://127.0.0.1:{port}/api/v2/alerts: "):
        await alertmanager_alerts(f"http://127.0.0.1:{port}", timeout_s=1.0)


# -- from rollups ------------------------------------------------------------------------------

def test_alerts_from_rollups_equal_alerts_from_minute_records(
        make_spend_store: StoreFactory) -> None:
    """Spend, budget (a month's budget reached before the 2-day lookback) and breaker alerts from
    the minute and day rollups equal those computed from every record counted at the start of its
    minute, on memory and Redis, without reading a raw record."""
    departments = {"eng": {"budgets": {"monthly": 30}, "soft_alerts": [0.5, 0.8]},
                   "sales": {"budgets": {"daily": 4, "monthly": 500}},
                   "ops": {"circuit_breaker": {"window_minutes": 30, "max_dollars": 1}}}
    config = parse_departments({"departments": departments,
                                "alerts": {"hourly_spend": 3, "daily_spend": 20}})
    start = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
    now = start + 19 * DAY + 7 * HOUR + 1234.5

    async def run() -> None:
        clock = FakeClock(start)
        store = make_spend_store(departments, clock=clock)
        rng = random.Random(5)
        stamps = sorted(rng.uniform(start, now) for _ in range(400))
        stamps += sorted(rng.uniform(now - 3 * HOUR, now) for _ in range(100))
        records = []
        for i, ts in enumerate(stamps):
            clock.now = ts
            dept = rng.choice(["eng", "sales", "ops"])
            record = record_at(f"r{i}", ts, dept, rng.choice([0, rng.randint(1, 2 * 10**9)]))
            records.append(record)
            try:
                held = await store.reserve(dept, "gpt-4o-mini", 10)
            except (BudgetExhausted, CircuitOpen):
                await store.add_record(record)
                continue
            await store.settle(held, record.cost_nanos, record)
        clock.now = now - 60  # the breaker trips on a last expensive request
        last = record_at("last", clock.now, "ops", 15 * 10**8)
        records.append(last)
        await store.resume("ops")
        await store.settle(await store.reserve("ops", "gpt-4o-mini", 10), last.cost_nanos, last)
        clock.now = now
        floored = [dataclasses.replace(r, ts=math.floor(r.ts / 60) * 60) for r in records]
        expected = await reference_alerts(store, config, floored, now)
        no_raw_records(store)
        found = await proxy_alerts(store, config, now)
        assert found == expected
        names = {(a.name, a.department) for a in found}
        assert {("MeterlineBudgetExhausted", "eng"), ("MeterlineHourlySpendHigh", None),
                ("MeterlineCircuitBreakerOpen", "ops")} <= names
        await store.close()

    asyncio.run(run())


def record_at(request_id: str, ts_: float, department: str, cost_nanos: int) -> UsageRecord:
    return dataclasses.replace(record(request_id, ts_, department, cost_nanos),
                               model_used="gpt-4o-mini")


async def reference_alerts(store: Ledger, config: DepartmentsConfig, records: list[UsageRecord],
                           now: float) -> list[Alert]:
    """proxy_alerts computed from the records themselves."""
    since = lookback_start(now)
    events = events_of(r for r in records if r.ts >= since)
    found = spend_alerts(events, config, now)
    for name in config.names:
        dept = config.get(name)
        for status in await store.budget_status(name):
            begin = period_start(status.period, now)
            history = events_of(r for r in records if r.ts >= begin).get(name, [])
            alert = budget_alert(status, dept, history, now)
            if alert is not None:
                found.append(alert)
        if dept.circuit_breaker is not None and await store.is_paused(name):
            found.append(breaker_alert(dept, events.get(name, []), now))
    return sort_alerts(found)
