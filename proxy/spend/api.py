"""HTTP endpoints for spend, budgets and chargeback; the logic lives in the ledger, chargeback
and views.

    GET  /admin/spend?from&to&by             spend per department|key|user|model, departments
    GET  /admin/budgets                      every department's budget windows and paused state
    POST /admin/departments/{name}/resume    clear a tripped circuit breaker
    GET  /admin/chargeback?from&to&format    department x model x day rows, CSV or JSON
    GET  /v1/spend                           the caller's own department: today, month, budget
    GET  /v1/spend/daily?days=30&department  cost per day and department, shares, cache per day
    GET  /v1/chargeback?from&to&format       the chargeback rows of the caller's own department
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.errors import InvalidRequest, NotFound, PermissionDenied, ServiceUnavailable
from proxy.gateway.requests import authenticate, request_id_of
from proxy.http import json_response, number_param, require_admin
from proxy.keys.store import Principal
from proxy.runtime.services import Services
from proxy.spend.chargeback import chargeback_csv_lines, chargeback_json
from proxy.spend.daily import MAX_DAYS, daily_series_arms, first_day_index
from proxy.spend.ledger import Ledger
from proxy.spend.pricing import nanos_to_dollars
from proxy.spend.views import (
    RECENT_LIMIT,
    budget_view,
    day_start,
    department_view,
    dimension,
    month_start,
    recent,
    spend_rows,
    time_range,
    total_nanos,
    total_requests,
)


def ledger_of(services: Services) -> Ledger:
    if services.spend is None:
        raise ServiceUnavailable("Spend tracking is not running.", code="spend_disabled")
    ledger: Ledger = services.spend
    return ledger


# ---- spend and budgets -----------------------------------------------------------------------

def known_department(services: Services, name: str | None) -> str | None:
    """A ?department= filter must name a configured department (None: all of them)."""
    if name is not None and services.department(name) is None:
        known = ", ".join(services.config.departments.names)
        raise InvalidRequest(f"Unknown department '{name}'; known: {known}.",
                             param="department", code="invalid_value")
    return name


async def departments_view(ledger: Ledger, names: tuple[str, ...], now: float,
                           department: str | None = None) -> list[dict[str, Any]]:
    """Today and this month per department, from two coarse rollup reads for all of them.
    `admin` (admin keys' own traffic) has no budget."""
    month = await ledger.usage(month_start(now), now + 1.0, department, "coarse")
    today = await ledger.usage(day_start(now), now + 1.0, department, "coarse")
    views = []
    for name in names:
        if name == ADMIN_DEPARTMENT:
            views.append(department_view(name, month, today, [], False))
            continue
        views.append(department_view(name, month, today, await ledger.budget_status(name),
                                     await ledger.is_paused(name)))
    return views


async def spend(request: Request) -> Response:
    """Reads rollups (O(hours x groups)), never every record of the range."""
    services, _ = await require_admin(request)
    ledger = ledger_of(services)
    params = dict(request.query_params)
    by = dimension(params)
    start, end = time_range(params)
    department = known_department(services, params.get("department") or None)
    usage = await ledger.usage(start, end, department,
                               "people" if by in ("key", "user") else "coarse")
    names = (department,) if department else services.config.departments.names
    return json_response({
        "from": start, "to": end, "by": by, "rows": spend_rows(usage, by),
        "total_usd": nanos_to_dollars(total_nanos(usage)), "requests": total_requests(usage),
        "departments": await departments_view(ledger, names, time.time(), department),
        "recent": recent(await ledger.recent(start, end, department, RECENT_LIMIT))})


async def budgets(request: Request) -> Response:
    services, _ = await require_admin(request)
    ledger = ledger_of(services)
    data = []
    for name in services.config.departments.names:
        dept = services.config.departments.get(name)
        data.append({"department": name, "paused": await ledger.is_paused(name),
                     "budgets": [budget_view(s) for s in await ledger.budget_status(name)],
                     "circuit_breaker": dept.circuit_breaker.model_dump(mode="json")
                     if dept.circuit_breaker else None,
                     "rpm": dept.rpm, "tpm": dept.tpm})
    return json_response({"object": "list", "data": data})


async def resume(request: Request) -> Response:
    services, _ = await require_admin(request)
    name = request.path_params["name"]
    if services.department(name) is None:
        raise NotFound(f"No department named '{name}'.", param="name",
                       code="department_not_found")
    ledger = ledger_of(services)
    await ledger.resume(name)
    return json_response({"department": name, "resumed": True,
                          "paused": await ledger.is_paused(name)})


async def chargeback(request: Request) -> Response:
    services, _ = await require_admin(request)
    params = dict(request.query_params)
    return await chargeback_response(services, params, params.get("department") or None)


async def own_chargeback(request: Request) -> Response:
    """GET /v1/chargeback: a department key gets its own department's rows (CSV or JSON)."""
    services, principal = await caller(request)
    params = dict(request.query_params)
    return await chargeback_response(services, params, scope_of(services, principal, params))


async def chargeback_response(services: Services, params: dict[str, str],
                              department: str | None) -> Response:
    fmt = params.get("format") or "json"
    if fmt not in ("csv", "json"):
        raise InvalidRequest(f"Invalid 'format': expected 'csv' or 'json', got '{fmt}'.",
                             param="format", code="invalid_value")
    start, end = time_range(params)
    report = await ledger_of(services).chargeback(start, end, department)
    if fmt == "json":
        return Response(chargeback_json(report), media_type="application/json")
    name = f"meterline-chargeback-{_day(start)}-to-{_day(end - 1)}.csv"
    return StreamingResponse(chargeback_csv_lines(report), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="{name}"'})


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


async def own_spend(request: Request) -> Response:
    """GET /v1/spend: a department key sees its own department; an admin key every department
    and its own traffic (`admin`), or the one named by ?department=."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    ledger = ledger_of(services)
    now = time.time()
    if principal.department is not None:
        name = principal.department
        return json_response((await departments_view(ledger, (name,), now, name))[0])
    asked = request.query_params.get("department") or None
    names = (*services.config.departments.names, ADMIN_DEPARTMENT)
    if asked is not None and asked not in names:
        raise InvalidRequest(f"Unknown department '{asked}'; known: {', '.join(names)}.",
                             param="department", code="invalid_value")
    if asked is not None:
        return json_response((await departments_view(ledger, (asked,), now, asked))[0])
    return json_response({"object": "list", "data": await departments_view(ledger, names, now)})


async def caller(request: Request) -> tuple[Services, Principal]:
    services: Services = request.app.state.services
    request_id_of(request)
    return services, await authenticate(request, services)


def scope_of(services: Services, principal: Principal, params: dict[str, str]) -> str | None:
    """The department a /v1 view covers: a department key's own (asking for another is a 403);
    for an admin key `department` when given, else every department (None)."""
    asked = params.get("department") or None
    if principal.admin or principal.department is None:
        if asked is not None and services.department(asked) is None:
            raise InvalidRequest(f"Unknown department '{asked}'.", param="department",
                                 code="invalid_value")
        return asked
    if asked is not None and asked != principal.department:
        raise PermissionDenied(f"This key belongs to department '{principal.department}' and "
                               f"cannot see '{asked}'.", param="department",
                               code="department_mismatch")
    return principal.department


async def own_daily(request: Request) -> Response:
    """GET /v1/spend/daily: the last `days` UTC days (today included) for the caller's scope,
    from the lean day rollups."""
    services, principal = await caller(request)
    params = dict(request.query_params)
    days = int(number_param(params, "days", 30, 1, MAX_DAYS))
    department = scope_of(services, principal, params)
    now = time.time()
    first = first_day_index(now, days)
    slices = await ledger_of(services).daily_usage(first * 86_400.0, now + 1.0, department)
    names = (department,) if department else services.config.departments.names
    view = await asyncio.to_thread(daily_series_arms, slices, first, days, names)
    view["department"] = department
    return json_response(view)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/spend", spend, methods=["GET"]),
        Route("/admin/budgets", budgets, methods=["GET"]),
        Route("/admin/departments/{name}/resume", resume, methods=["POST"]),
        Route("/admin/chargeback", chargeback, methods=["GET"]),
        Route("/v1/spend", own_spend, methods=["GET"]),
        Route("/v1/spend/daily", own_daily, methods=["GET"]),
        Route("/v1/chargeback", own_chargeback, methods=["GET"]),
    ]
