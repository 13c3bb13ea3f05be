"""Forecast, budget-recommendation and alert endpoints through the real proxy (mock upstream),
on embedded state and on Redis Stack; plus the pure alert rules and an Alertmanager stand-in."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import yaml

from proxy.config.departments import parse_departments
from proxy.insights.alerts import budget_alert, rolling_state
from proxy.spend.budgets import BudgetStatus
from proxy.spend.ledger import Ledger, SpendOptions, create_spend_store
from proxy.spend.pricing import load_pricing, to_nanos
from proxy.spend.records import UsageRecord
from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, free_port

ADMIN = {"authorization": "Bearer sk-demo-admin"}
ENG = {"authorization": "Bearer sk-demo-engineering"}
DAY = 86_400.0
BUDGETS = {"engineering": {"daily": 200, "monthly": 3000}, "sales": {"daily": 30},
           "marketing": {"monthly": 800}, "executive": {}}


def departments_yaml(alerts: dict[str, Any] | None = None,
                     engineering: dict[str, Any] | None = None) -> dict[str, Any]:
    depts = {name: {"budgets": budgets}
             for name, budgets in BUDGETS.items()}
    depts["engineering"].update(engineering or {})
    raw: dict[str, Any] = {"version": 1, "departments": depts}
    if alerts is not None:
        raw["alerts"] = alerts
    return raw


def start(start_proxy: ProxyStarter, state: dict[str, Any], **kwargs: Any) -> ServerThread:
    alertmanager_url = kwargs.pop("alertmanager_url", None)
    edits = {"departments.yaml": departments_yaml(**kwargs), "cache.yaml": "enabled: false\n"}
    return start_proxy(edits=edits, alertmanager_url=alertmanager_url, **state)


def chat(proxy: ServerThread, headers: dict[str, str] = ENG) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "max_tokens": 16,
            "messages": [{"role": "user", "content": "insights " + uuid.uuid4().hex}]}
    r = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r


def get(proxy: ServerThread, path: str, headers: dict[str, str] = ADMIN,
        **params: str) -> httpx.Response:
    return httpx.get(proxy.url + path, params=params, headers=headers, timeout=30)


def recorded_cost(proxy: ServerThread, requests: int) -> float:
    """Dollars the proxy stored for the last hour's proxied requests (not seeded records), once
    `requests` of them are there (records are written after the response)."""
    deadline = time.monotonic() + 5
    while True:
        r = get(proxy, "/admin/spend", by="key", **{"from": str(time.time() - 3600)})
        assert r.status_code == 200, r.text
        rows = [row for row in r.json()["rows"] if row["key"] != "seed"]
        if sum(row["requests"] for row in rows) >= requests or time.monotonic() > deadline:
            assert sum(row["requests"] for row in rows) == requests, rows
            return sum(float(row["cost_usd"]) for row in rows)
        time.sleep(0.05)


# ----- seeded history -------------------------------------------------------------------------

def record(ts: float, department: str, cost: float, saved: float = 0.0) -> UsageRecord:
    return UsageRecord(request_id=uuid.uuid4().hex, ts=ts, department=department, key_id="seed",
                       user=None, endpoint="chat.completions", model_requested="gpt-4o-mini",
                       model_used="gpt-4o-mini", provider="openai", status=200,
                       cost_nanos=to_nanos(cost), saved_nanos=to_nanos(saved),
                       cache="hit-exact" if saved else "miss")


def history(now: float, days: int = 21) -> list[UsageRecord]:
    """Noon-UTC records for the last `days` whole days: engineering $5 on weekdays and $1 at
    weekends, sales $2 a day plus $0.50 a day of cache savings."""
    today = math.floor(now / DAY)
    out = []
    for back in range(1, days + 1):
        noon = (today - back) * DAY + 12 * 3600
        weekend = datetime.fromtimestamp(noon, UTC).weekday() >= 5
        out.append(record(noon, "engineering", 1.0 if weekend else 5.0))
        out += [record(noon, "sales", 2.0), record(noon + 60, "sales", 0.0, saved=0.5)]
    return out


def seed(proxy: ServerThread, state: dict[str, Any], records: list[UsageRecord]) -> None:
    """Write records through a spend store: the proxy's own (embedded) or one on its prefix."""
    async def write(ledger: Ledger, close: bool) -> None:
        for item in records:
            await ledger.add_record(item)
        if close:
            await ledger.close()

    if not state:
        asyncio.run(write(proxy.server.config.app.state.services.spend, close=False))
        return
    config = parse_departments(departments_yaml())
    store = create_spend_store(state["redis_url"], config, load_pricing(),
                               options=SpendOptions(key_prefix=state["redis_prefix"]))
    asyncio.run(write(store, close=True))


# ----- forecast -------------------------------------------------------------------------------

def test_forecast_has_days_per_department(start_proxy: ProxyStarter,
                                          state: dict[str, Any]) -> None:
    proxy = start(start_proxy, state)
    now = time.time()
    seed(proxy, state, history(now))
    for _ in range(3):
        chat(proxy)
    spent_today = recorded_cost(proxy, 3)
    r = get(proxy, "/admin/forecast", horizon="7d")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["horizon_days"] == 7 and data["interval"] == 0.8
    by_name = {d["department"]: d for d in data["departments"]}
    assert set(by_name) == set(BUDGETS)
    eng = by_name["engineering"]
    assert eng["method"] == "weekly-profile+trend" and eng["history_days"] >= 21
    assert eng["days"][0]["date"] == datetime.fromtimestamp(now, UTC).date().isoformat()
    assert len(eng["days"]) == 7
    for day in eng["days"]:
        assert 0 <= day["low"] <= day["expected"] <= day["high"]
    assert eng["days"][0]["expected"] >= round(spent_today, 2)
    weekday = [d["expected"] for d in eng["days"][1:] if _weekday(d["date"]) < 5]
    weekend = [d["expected"] for d in eng["days"][1:] if _weekday(d["date"]) >= 5]
    assert min(weekday) > 3 * max(weekend) > 0
    assert by_name["sales"]["days"][3]["expected"] == pytest.approx(2.0, abs=0.05)
    assert by_name["executive"]["method"] == "no-history"


def _weekday(date: str) -> int:
    return datetime.fromisoformat(date).weekday()


def test_forecast_one_department_and_own_forecast(start_proxy: ProxyStarter) -> None:
    proxy = start(start_proxy, {})
    seed(proxy, {}, history(time.time(), days=10))
    r = get(proxy, "/admin/forecast", horizon="2w", department="sales", interval="0.9")
    assert r.status_code == 200, r.text
    assert [d["department"] for d in r.json()["departments"]] == ["sales"]
    assert r.json()["horizon_days"] == 14 and r.json()["interval"] == 0.9
    own = get(proxy, "/v1/forecast", ENG, horizon="3d")
    assert own.status_code == 200, own.text
    assert [d["department"] for d in own.json()["departments"]] == ["engineering"]
    assert len(own.json()["departments"][0]["days"]) == 3
    other = get(proxy, "/v1/forecast", ENG, department="sales")
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "department_mismatch"
    admin_own = get(proxy, "/v1/forecast", ADMIN, department="sales")
    assert [d["department"] for d in admin_own.json()["departments"]] == ["sales"]


def _bad(message: str, param: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": "invalid_value"}}


HORIZON = "expected days like '7d' or weeks like '2w' (1 to 92 days)"


@pytest.mark.parametrize(("path", "params", "expected"), [
    ("/admin/forecast", {"horizon": "0d"}, _bad(f"Invalid 'horizon': {HORIZON}, got '0d'.",
                                                "horizon")),
    ("/admin/forecast", {"horizon": "93d"}, _bad(f"Invalid 'horizon': {HORIZON}, got '93d'.",
                                                 "horizon")),
    ("/admin/forecast", {"horizon": "7x"}, _bad(f"Invalid 'horizon': {HORIZON}, got '7x'.",
                                                "horizon")),
    ("/admin/forecast", {"interval": "1"}, _bad(
        "Invalid 'interval': expected a number in (0, 1), got '1'.", "interval")),
    ("/admin/forecast", {"interval": "abc"}, _bad(
        "Invalid 'interval': expected a number in (0, 1), got 'abc'.", "interval")),
    ("/admin/forecast", {"department": "legal"}, _bad(
        "Unknown department 'legal'; known: engineering, sales, marketing, executive.",
        "department")),
    ("/v1/forecast", {"horizon": "-1"}, _bad(f"Invalid 'horizon': {HORIZON}, got '-1'.",
                                             "horizon")),
    ("/admin/budget-recommendations", {"period": "yearly"}, _bad(
        "Invalid 'period': expected one of daily, weekly, monthly, got 'yearly'.", "period")),
    ("/admin/budget-recommendations", {"headroom": "-0.1"}, _bad(
        "Invalid 'headroom': expected a number in [0, 1), got '-0.1'.", "headroom")),
])
def test_bad_parameters_are_400(proxy: ServerThread, path: str, params: dict[str, str],
                                expected: dict[str, Any]) -> None:
    headers = ENG if path.startswith("/v1/") else ADMIN
    r = get(proxy, path, headers, **params)
    assert r.status_code == 400
    assert r.json() == expected


@pytest.mark.parametrize("path", ["/admin/forecast", "/admin/budget-recommendations",
                                  "/admin/alerts"])
def test_admin_endpoints_need_an_admin_key(proxy: ServerThread, path: str) -> None:
    r = get(proxy, path, ENG)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    assert r.json()["error"]["code"] == "admin_key_required"
    assert get(proxy, path, {}).status_code == 401


# ----- budget recommendations -----------------------------------------------------------------

def test_budget_recommendations_explain_themselves(start_proxy: ProxyStarter,
                                                   state: dict[str, Any]) -> None:
    proxy = start(start_proxy, state)
    now = time.time()
    seeded = history(now)
    seed(proxy, state, seeded)
    r = get(proxy, "/admin/budget-recommendations", period="weekly")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["period"] == "weekly" and data["period_days"] == 7
    rows = {row["department"]: row for row in data["data"]}
    assert set(rows) == set(BUDGETS)
    eng, sales = rows["engineering"], rows["sales"]
    assert eng["current_budget"] == 1400 and eng["current_budget_basis"] == "daily budget x 7"
    assert eng["recommended_budget"] >= eng["high"] >= eng["forecast"] > 20  # 4-5 weekdays x $5
    assert eng["reasoning"].startswith("forecast $")
    assert "recommend $" in eng["reasoning"] and "headroom" in eng["reasoning"]
    assert eng["change"] == "decrease"
    saved = 0.5 * sum(1 for r in seeded if r.saved and r.ts >= now - 7 * DAY)
    assert saved >= 3.0 and sales["cache_savings"] == pytest.approx(saved)
    assert f"cache saved ${saved:.2f} last week" in sales["reasoning"]
    assert rows["marketing"]["current_budget_basis"] == "monthly budget x 7/30"
    executive = rows["executive"]
    assert executive["current_budget"] is None and executive["change"] == "new"
    assert executive["recommended_budget"] == 0 and "no current budget" in executive["reasoning"]


def test_forecast_and_budget_recommendations_read_no_raw_records(
        start_proxy: ProxyStarter, state: dict[str, Any]) -> None:
    """They read the hour rollups: with every raw-record read failing they answer the same."""
    proxy = start(start_proxy, state)
    seed(proxy, state, history(time.time()))
    paths = [("/admin/forecast", {"horizon": "7d"}),
             ("/admin/budget-recommendations", {"period": "weekly"})]

    def answers() -> list[dict[str, Any]]:
        found = []
        for path, params in paths:
            r = get(proxy, path, **params)
            assert r.status_code == 200, r.text
            found.append({k: v for k, v in r.json().items() if k != "generated_at"})
        return found

    before = answers()

    async def refuse(*args: object) -> None:
        raise AssertionError("a report read raw records")

    proxy.server.config.app.state.services.spend.backend.query_records = refuse
    assert answers() == before
    sales = next(row for row in before[1]["data"] if row["department"] == "sales")
    assert sales["cache_savings"] >= 3.0


def test_monthly_recommendation_uses_the_monthly_budget(start_proxy: ProxyStarter) -> None:
    proxy = start(start_proxy, {})
    seed(proxy, {}, history(time.time()))
    r = get(proxy, "/admin/budget-recommendations", period="monthly", headroom="0.1")
    assert r.status_code == 200, r.text
    eng = {row["department"]: row for row in r.json()["data"]}["engineering"]
    assert eng["period_days"] == 30 and eng["current_budget"] == 3000
    assert eng["current_budget_basis"] == "monthly budget"
    assert eng["recommended_budget"] == math.ceil(eng["high"] * 1.1)
    assert "10% headroom" in eng["reasoning"]


# ----- alerts: the proxy's own thresholds -----------------------------------------------------

def alerts_of(proxy: ServerThread) -> dict[str, Any]:
    r = get(proxy, "/admin/alerts")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_hourly_spend_alert_fires_past_threshold(start_proxy: ProxyStarter,
                                                 state: dict[str, Any]) -> None:
    proxy = start(start_proxy, state, alerts={"hourly_spend": 0.00001, "daily_spend": None})
    assert alerts_of(proxy)["alerts"] == []
    before = time.time()
    chat(proxy)
    chat(proxy)
    spent = recorded_cost(proxy, 2)
    assert spent > 0.00001
    data = alerts_of(proxy)
    assert data["source"] == "proxy" and "warning" not in data
    found = {(a["name"], a["department"]): a for a in data["alerts"]}
    assert set(found) == {("MeterlineHourlySpendHigh", None),
                          ("MeterlineHourlySpendHigh", "engineering")}
    total = found["MeterlineHourlySpendHigh", None]
    assert total["severity"] == "warning" and total["threshold"] == 0.00001
    assert total["value"] == pytest.approx(spent, abs=1e-6)
    assert total["message"].startswith("Hourly spend exceeded threshold: $")
    assert total["message"].endswith(" / $0.00001")
    since = datetime.fromisoformat(total["since"]).timestamp()
    assert math.floor(before / 60) * 60 - 1 <= since <= time.time()  # the request's minute
    dept = found["MeterlineHourlySpendHigh", "engineering"]
    assert dept["message"].startswith("engineering: Hourly spend exceeded threshold: $")


def test_no_alerts_under_the_thresholds(start_proxy: ProxyStarter, state: dict[str, Any]) -> None:
    proxy = start(start_proxy, state, alerts={"hourly_spend": 10, "daily_spend": 100,
                                              "departments": {"sales": {"hourly_spend": 1}}})
    chat(proxy)
    assert recorded_cost(proxy, 1) > 0
    data = alerts_of(proxy)
    assert data["source"] == "proxy" and data["alerts"] == []


def test_department_override_and_daily_threshold(start_proxy: ProxyStarter) -> None:
    proxy = start(start_proxy, {}, alerts={
        "hourly_spend": None, "daily_spend": 1000,
        "departments": {"engineering": {"daily_spend": 0.000001}}})
    chat(proxy)
    recorded_cost(proxy, 1)
    alerts = alerts_of(proxy)["alerts"]
    assert [(a["name"], a["department"]) for a in alerts] == [
        ("MeterlineDailySpendHigh", "engineering")]
    assert alerts[0]["message"].startswith("engineering: Daily spend exceeded threshold: $")


def test_open_circuit_breaker_is_an_alert(start_proxy: ProxyStarter,
                                          state: dict[str, Any]) -> None:
    breaker = {"circuit_breaker": {"window_minutes": 10, "max_dollars": 0.000001}}
    proxy = start(start_proxy, state, alerts={"hourly_spend": None, "daily_spend": None},
                  engineering=breaker)
    chat(proxy)
    recorded_cost(proxy, 1)
    refused = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG, timeout=30, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]})
    assert refused.status_code == 429
    alerts = alerts_of(proxy)["alerts"]
    assert [a["name"] for a in alerts] == ["MeterlineCircuitBreakerOpen"]
    assert alerts[0]["severity"] == "critical" and alerts[0]["department"] == "engineering"
    assert alerts[0]["message"].startswith("engineering: circuit breaker open: $")
    assert alerts[0]["since"] is not None


def test_rolling_state_reports_when_the_sum_crossed() -> None:
    events = [(100.0, 4), (200.0, 4), (3700.0, 4), (5000.0, 1)]
    assert rolling_state(events, 3600, 6, now=5000.0) == (5, None)  # 3700 + 5000 only
    # at 3700 the event from 100 leaves as a new one arrives: the sum never dips below 8
    assert rolling_state(events[:3], 3600, 6, now=3750.0) == (8, 200.0)
    assert rolling_state(events[:3], 3600, 8, now=3750.0) == (8, None)
    dipping = [(0.0, 4), (100.0, 4), (3650.0, 4)]  # 8 from 100, 4 at 3600, 8 again at 3650
    assert rolling_state(dipping, 3600, 6, now=3690.0) == (8, 3650.0)
    assert rolling_state([(5000.0, 9)], 3600, 6, now=4990.0) == (9, 4990.0)  # clock skew


@pytest.mark.parametrize(("spent", "reserved", "expected"), [
    (7.0, 0.0, None),
    (8.0, 0.0, ("MeterlineBudgetSoftThreshold", "warning", 8.0,
                "sales: Daily budget 80% used: $8 / $10")),
    (9.6, 0.0, ("MeterlineBudgetSoftThreshold", "warning", 9.5,
                "sales: Daily budget 95% used: $9.60 / $10")),
    (9.7, 0.3, ("MeterlineBudgetExhausted", "critical", 10.0,
                "sales: Daily budget exhausted: $9.70 / $10")),
    (10.2, 0.0, ("MeterlineBudgetExhausted", "critical", 10.0,
                 "sales: Daily budget exhausted: $10.20 / $10")),
])
def test_budget_alerts(spent: float, reserved: float,
                       expected: tuple[str, str, float, str] | None) -> None:
    dept = parse_departments({"departments": {"sales": {
        "budgets": {"daily": 10}, "soft_alerts": [0.8, 0.95]}}}
    ).get("sales")
    now = 1_750_000_000.0
    status = BudgetStatus("sales", "daily", 10.0, spent, reserved, 3600.0)
    events = [(now - 60, 8_000_000_000), (now - 30, round((spent - 8) * 1e9))] if spent >= 8 else []
    alert = budget_alert(status, dept, events, now)
    if expected is None:
        assert alert is None
        return
    assert alert is not None
    assert (alert.name, alert.severity, alert.threshold, alert.message) == expected
    assert alert.since in (now - 60, now - 30, None)


# ----- alerts: Alertmanager -------------------------------------------------------------------

AM_ALERTS = [
    {"labels": {"alertname": "MeterlineDailySpendHigh", "department": "sales",
                "severity": "warning", "scope": "department"},
     "annotations": {"summary": "Department sales spent $123.40 in the last 24 hours"},
     "startsAt": "2025-06-15T15:06:40.123456789Z", "status": {"state": "active"}},
    {"labels": {"alertname": "MeterlineBudgetExhausted", "department": "sales",
                "severity": "critical", "period": "day"},
     "annotations": {"summary": "Department sales has used its whole day budget"},
     "startsAt": "2025-06-15T16:00:00Z", "status": {"state": "active"}},
]


class AlertmanagerStandin:
    """GET /api/v2/alerts answers `payload` with `status`; remembers the query strings."""

    def __init__(self, payload: Any, status: int = 200) -> None:
        self.queries: list[dict[str, list[str]]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                url = urlparse(self.path)
                standin.queries.append(parse_qs(url.query))
                found = url.path == "/api/v2/alerts"
                body = json.dumps(payload if found else {"error": "no"}).encode()
                self.send_response(status if found else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def alertmanager() -> Iterator[AlertmanagerStandin]:
    standin = AlertmanagerStandin(AM_ALERTS)
    standin.thread.start()
    yield standin
    standin.server.shutdown()
    standin.server.server_close()


def test_alerts_come_from_alertmanager_when_configured(
        start_proxy: ProxyStarter, alertmanager: AlertmanagerStandin) -> None:
    proxy = start(start_proxy, {}, alerts={"hourly_spend": 0.000001},
                  alertmanager_url=alertmanager.url + "/")
    chat(proxy)
    data = alerts_of(proxy)
    assert data["source"] == "alertmanager" and "warning" not in data
    assert alertmanager.queries == [{"active": ["true"], "silenced": ["false"],
                                     "inhibited": ["false"]}]
    first, second = data["alerts"]
    assert first == {
        "name": "MeterlineBudgetExhausted", "severity": "critical", "department": "sales",
        "value": None, "threshold": None,
        "message": "Department sales has used its whole day budget",
        "since": "2025-06-15T16:00:00+00:00", "labels": AM_ALERTS[1]["labels"]}
    assert second["name"] == "MeterlineDailySpendHigh" and second["severity"] == "warning"
    assert second["message"] == "Department sales spent $123.40 in the last 24 hours"
    assert second["since"] == "2025-06-15T15:06:40.123456+00:00"


@pytest.mark.parametrize("broken", ["unreachable", "http-500", "not-a-list"])
def test_unreadable_alertmanager_falls_back_and_says_so(start_proxy: ProxyStarter,
                                                        broken: str) -> None:
    standin = AlertmanagerStandin({"alerts": []} if broken == "not-a-list" else [],
                                  500 if broken == "http-500" else 200)
    url = f"http://127.0.0.1:{free_port()}" if broken == "unreachable" else standin.url
    if broken != "unreachable":
        standin.thread.start()
    try:
        proxy = start(start_proxy, {}, alerts={"hourly_spend": 0.000001, "daily_spend": None},
                      alertmanager_url=url)
        chat(proxy)
        recorded_cost(proxy, 1)
        data = alerts_of(proxy)
    finally:
        if broken != "unreachable":
            standin.server.shutdown()
        standin.server.server_close()
    assert data["source"] == "proxy"
    assert data["warning"].startswith("Alertmanager could not be read (")
    assert data["warning"].endswith("); showing the proxy's own thresholds.")
    assert {a["name"] for a in data["alerts"]} == {"MeterlineHourlySpendHigh"}


def test_departments_file_rejects_alert_overrides_for_unknown_departments() -> None:
    raw = departments_yaml(alerts={"departments": {"legal": {"daily_spend": 5}}})
    with pytest.raises(ValueError, match=r"departments \['legal'\] are not defined"):
        parse_departments(yaml.safe_load(yaml.safe_dump(raw)))


# ----- alerts for a department key -------------------------------------------------------------

def test_department_key_sees_only_its_own_alerts(start_proxy: ProxyStarter,
                                                 state: dict[str, Any]) -> None:
    """GET /v1/alerts: a department key (no admin rights) gets its own department's alerts, not
    the all-departments total nor another department's; an admin key gets them all."""
    proxy = start(start_proxy, state, alerts={"hourly_spend": 0.00001, "daily_spend": None})
    chat(proxy)
    chat(proxy, {"authorization": "Bearer sk-demo-sales"})
    recorded_cost(proxy, 2)
    own = get(proxy, "/v1/alerts", ENG)
    assert own.status_code == 200, own.text
    assert own.json()["department"] == "engineering" and own.json()["admin"] is False
    assert [(a["name"], a["department"]) for a in own.json()["alerts"]] == [
        ("MeterlineHourlySpendHigh", "engineering")]
    quiet = get(proxy, "/v1/alerts", {"authorization": "Bearer sk-demo-marketing"}).json()
    assert quiet["alerts"] == [] and quiet["department"] == "marketing"
    every = get(proxy, "/v1/alerts", ADMIN).json()
    assert every["department"] is None and every["admin"] is True
    assert {a["department"] for a in every["alerts"]} == {None, "engineering", "sales"}
    refused = get(proxy, "/v1/alerts", {"authorization": "Bearer sk-nope"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_department_key_sees_only_its_alertmanager_alerts(
        start_proxy: ProxyStarter, alertmanager: AlertmanagerStandin) -> None:
    proxy = start(start_proxy, {}, alertmanager_url=alertmanager.url)
    sales = get(proxy, "/v1/alerts", {"authorization": "Bearer sk-demo-sales"}).json()
    assert sales["source"] == "alertmanager"
    assert {a["department"] for a in sales["alerts"]} == {"sales"}
    assert get(proxy, "/v1/alerts", ENG).json()["alerts"] == []
