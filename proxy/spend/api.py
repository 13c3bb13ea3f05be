"""HTTP endpoints for spend, budgets and chargeback; the logic lives in the ledger, chargeback
and views.

    GET  /admin/spend?from&to&by             spend per department|key|user|model, departments
    GET  /admin/budgets                      every department's budget windows and paused state
    POST /admin/departments/{name}/resume    clear a tripped circuit breaker
    GET  /admin/chargeback?from&to&format    department x model x day rows, CSV or JSON
    GET  /v1/spend                           the caller's own department: today, month, budget
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from proxy.errors import InvalidRequest, NotFound, ServiceUnavailable
from proxy.gateway.requests import authenticate, request_id_of
from proxy.http import json_response, require_admin
from proxy.runtime.services import Services
from proxy.spend.chargeback import chargeback_csv_lines, chargeback_json
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

async def departments_view(ledger: Ledger, names: tuple[str, ...], now: float,
                           department: str | None = None) -> list[dict[str, Any]]:
    month = await ledger.usage(month_start(now), now + 1.0, department, "coarse")
    today = await ledger.usage(day_start(now), now + 1.0, department, "coarse")
    return [department_view(name, month, today, await ledger.budget_status(name),
                            await ledger.is_paused(name)) for name in names]


async def spend(request: Request) -> Response:
    """Reads rollups (O(hours x groups)), never every record of the range."""
    services, _ = await require_admin(request)
    ledger = ledger_of(services)
    params = dict(request.query_params)
    by = dimension(params)
    start, end = time_range(params)
    department = params.get("department") or None
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
    fmt = params.get("format") or "json"
    if fmt not in ("csv", "json"):
        raise InvalidRequest(f"Invalid 'format': expected 'csv' or 'json', got '{fmt}'.",
                             param="format", code="invalid_value")
    start, end = time_range(params)
    report = await ledger_of(services).chargeback(start, end, params.get("department") or None)
    if fmt == "json":
        return Response(chargeback_json(report), media_type="application/json")
    name = f"meterline-chargeback-{_day(start)}-to-{_day(end - 1)}.csv"
    return StreamingResponse(chargeback_csv_lines(report), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="{name}"'})


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


async def own_spend(request: Request) -> Response:
    """GET /v1/spend: any key sees its own department (admin keys pass ?department=)."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    name = principal.department
    if name is None:
        name = request.query_params.get("department") or None
        if name is None or services.department(name) is None:
            raise InvalidRequest("Admin keys have no department: pass ?department=<name>.",
                                 param="department", code="invalid_value")
    ledger = ledger_of(services)
    now = time.time()
    view = (await departments_view(ledger, (name,), now, name))[0]
    return json_response(view)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/spend", spend, methods=["GET"]),
        Route("/admin/budgets", budgets, methods=["GET"]),
        Route("/admin/departments/{name}/resume", resume, methods=["POST"]),
        Route("/admin/chargeback", chargeback, methods=["GET"]),
        Route("/v1/spend", own_spend, methods=["GET"]),
    ]
