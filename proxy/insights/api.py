"""HTTP endpoints for forecasts, budget recommendations and current alerts; the logic lives in
proxy.insights.forecast and proxy.insights.alerts.

    GET /admin/forecast?horizon=7d&interval=0.8&department=   daily spend forecast per department
    GET /v1/forecast?horizon=7d&interval=0.8                   the caller's own department
    GET /admin/budget-recommendations?period=weekly&headroom=  next period's budget per department
    GET /admin/alerts                                          alerts for UIs (Alertmanager or own)
    GET /v1/alerts                                             the caller's own department's alerts
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.config.departments import ADMIN_DEPARTMENT, Department
from proxy.errors import InvalidRequest, PermissionDenied
from proxy.gateway.requests import authenticate, request_id_of
from proxy.http import json_response, number_param, require_admin
from proxy.insights.alerts import Alert, AlertSourceError, alertmanager_alerts, proxy_alerts
from proxy.insights.budget_advice import recommend_budgets
from proxy.insights.forecast import DAY, MAX_HISTORY_DAYS, forecast_spend
from proxy.runtime.services import Services
from proxy.spend.api import ledger_of
from proxy.spend.pricing import nanos_to_dollars

BudgetPeriod = Literal["daily", "weekly", "monthly"]
PERIOD_DAYS: dict[BudgetPeriod, int] = {"daily": 1, "weekly": 7, "monthly": 30}
MAX_HORIZON_DAYS = 92
_HORIZON = re.compile(r"^(\d{1,3})([dw]?)$")


# ----- parameters ------------------------------------------------------------------------------

def parse_horizon(raw: str | None) -> int:
    """'7d', '2w' or a plain number of days; 1..92 days."""
    match = _HORIZON.match((raw or "7d").strip().lower())
    days = int(match.group(1)) * (7 if match.group(2) == "w" else 1) if match else 0
    if not 1 <= days <= MAX_HORIZON_DAYS:
        raise InvalidRequest(
            f"Invalid 'horizon': expected days like '7d' or weeks like '2w' "
            f"(1 to {MAX_HORIZON_DAYS} days), got '{raw}'.", param="horizon", code="invalid_value")
    return days


def parse_period(raw: str | None) -> BudgetPeriod:
    period = raw or "weekly"
    for known in PERIOD_DAYS:
        if period == known:
            return known
    raise InvalidRequest(f"Invalid 'period': expected one of {', '.join(PERIOD_DAYS)}, got "
                         f"'{period}'.", param="period", code="invalid_value")


def known_department(services: Services, name: str | None) -> str | None:
    if name is not None and services.department(name) is None:
        known = ", ".join(services.config.departments.names)
        raise InvalidRequest(f"Unknown department '{name}'; known: {known}.",
                             param="department", code="invalid_value")
    return name


# ----- forecasts -------------------------------------------------------------------------------

async def history(services: Services, department: str | None,
                  now: float) -> list[dict[str, Any]]:
    """Spend per department and UTC hour of the last MAX_HISTORY_DAYS whole days plus today so
    far, from the hour rollups (bucket_hourly's input: one entry per hour and model)."""
    start = (math.floor(now / DAY) - MAX_HISTORY_DAYS) * DAY
    usage = await ledger_of(services).usage(start, now + 1.0, department, "coarse", "h")
    return [{"ts": part.start, "department": part.department,
             "cost": nanos_to_dollars(part.cost_nanos)} for part in usage]


Forecast = tuple[dict[str, Any], list[dict[str, Any]]]


async def forecast_view(services: Services, params: Mapping[str, str], department: str | None,
                        horizon_days: int | None = None) -> Forecast:
    """forecast_spend(...) output and the hourly spend it was made from."""
    horizon = horizon_days or parse_horizon(params.get("horizon"))
    interval = number_param(params, "interval", 0.8, 0.0, 1.0,
                            include_low=False, include_high=False)
    now = time.time()
    records = await history(services, department, now)
    names = (department,) if department else services.config.departments.names
    # numpy over up to 8 weeks of hours: keep the event loop free meanwhile
    forecast = await asyncio.to_thread(forecast_spend, records, now, horizon, interval, names)
    return forecast, records


async def admin_forecast(request: Request) -> Response:
    services, _ = await require_admin(request)
    department = known_department(services, request.query_params.get("department") or None)
    forecast, _ = await forecast_view(services, request.query_params, department)
    return json_response(forecast)


async def own_forecast(request: Request) -> Response:
    """GET /v1/forecast: a department key sees its own department only."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    asked = request.query_params.get("department") or None
    name = principal.department
    if name is None:
        if asked is None:
            raise InvalidRequest("Admin keys have no department: pass ?department=<name>.",
                                 param="department", code="invalid_value")
        name = known_department(services, asked)
    elif asked is not None and asked != name:
        raise PermissionDenied(f"This key belongs to department '{name}' and cannot see "
                               f"'{asked}'.", param="department", code="department_mismatch")
    forecast, _ = await forecast_view(services, request.query_params, name)
    return json_response(forecast)


# ----- budget recommendations ------------------------------------------------------------------

def current_budget(dept: Department, period: BudgetPeriod) -> tuple[float | None, str | None]:
    """The department's current ceiling for `period`, and how it was derived from its
    hourly/daily/monthly budgets (departments.yaml has no weekly budget)."""
    daily, monthly = dept.budgets.daily, dept.budgets.monthly
    days = PERIOD_DAYS[period]
    if period == "monthly" and monthly is not None:
        return float(monthly), "monthly budget"
    if period == "daily" and daily is not None:
        return float(daily), "daily budget"
    if daily is not None:
        return float(daily) * days, f"daily budget x {days}"
    if monthly is not None:
        return round(float(monthly) * days / 30, 2), f"monthly budget x {days}/30"
    return None, None


async def savings_since(services: Services, department: str | None, start: float,
                        now: float) -> dict[str, float]:
    """Cache savings per department since the minute of `start`, from the rollups (no raw
    record: whole minutes)."""
    totals: dict[str, int] = defaultdict(int)
    since = math.floor(start / 60) * 60
    for part in await ledger_of(services).usage(since, now + 1.0, department, "coarse"):
        totals[part.department] += part.saved_nanos
    return {name: nanos_to_dollars(nanos) for name, nanos in totals.items() if nanos > 0}


async def budget_recommendations(request: Request) -> Response:
    services, _ = await require_admin(request)
    params = request.query_params
    period = parse_period(params.get("period"))
    headroom = number_param(params, "headroom", 0.02, 0.0, 1.0, include_high=False)
    department = known_department(services, params.get("department") or None)
    days = PERIOD_DAYS[period]
    forecast, _ = await forecast_view(services, params, department, days)
    now = time.time()
    depts = services.config.departments
    current = {name: current_budget(depts.get(name), period) for name in depts.names}
    budgets = {name: value for name, (value, _) in current.items() if value is not None}
    savings = await savings_since(services, department, now - days * DAY, now)
    rows = recommend_budgets(forecast, savings, budgets, headroom)
    rows = [row for row in rows if row["department"] != ADMIN_DEPARTMENT]  # never budgeted
    for row in rows:
        row["current_budget_basis"] = current.get(row["department"], (None, None))[1]
    return json_response({
        "object": "list", "period": period, "period_days": days, "headroom": headroom,
        "generated_at": forecast["generated_at"], "interval": forecast["interval"],
        "note": f"the period is the next {days} day(s) starting today (UTC); cache savings "
                f"are from the last {days} day(s)", "data": rows})


# ----- alerts ----------------------------------------------------------------------------------

async def current_alerts(services: Services,
                         now: float) -> tuple[str, list[Alert], str | None]:
    """Alertmanager's active alerts when MET_ALERTMANAGER_URL is set (falling back to the
    proxy's own thresholds if it can't be read), else the proxy's own thresholds."""
    url = services.settings.alertmanager_url
    warning = None
    if url:
        try:
            return "alertmanager", await alertmanager_alerts(url), None
        except AlertSourceError as exc:
            warning = f"Alertmanager could not be read ({exc}); showing the proxy's own thresholds."
    found = await proxy_alerts(ledger_of(services), services.config.departments, now)
    return "proxy", found, warning


async def alerts(request: Request) -> Response:
    services, _ = await require_admin(request)
    now = time.time()
    source, found, warning = await current_alerts(services, now)
    return json_response(alerts_view(source, found, now, warning))


async def own_alerts(request: Request) -> Response:
    """GET /v1/alerts: any key; a department key sees only its own department's alerts (for the
    pages' banner), an admin key sees them all."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    now = time.time()
    source, found, warning = await current_alerts(services, now)
    if not principal.admin:
        found = [alert for alert in found if alert.department == principal.department]
    view = alerts_view(source, found, now, warning)
    view["admin"] = principal.admin
    view["department"] = None if principal.admin else principal.department
    return json_response(view)


def alerts_view(source: str, found: list[Alert], now: float,
                warning: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {"object": "list", "source": source,
                            "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
                            "alerts": [alert.to_dict() for alert in found]}
    if warning:
        view["warning"] = warning
    return view


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/forecast", admin_forecast, methods=["GET"]),
        Route("/v1/forecast", own_forecast, methods=["GET"]),
        Route("/admin/budget-recommendations", budget_recommendations, methods=["GET"]),
        Route("/admin/alerts", alerts, methods=["GET"]),
        Route("/v1/alerts", own_alerts, methods=["GET"]),
    ]
