"""HTTP endpoints for keys, spend, budgets and chargeback; the logic lives in keys, spend,
chargeback and spend_views.

    POST /admin/keys                         create a key (the raw key is in this answer only)
    GET  /admin/keys                         keys without raw values or full hashes
    POST /admin/keys/{id}/rotate             new key; the old one works for grace_seconds
    POST /admin/keys/{id}/disable            the key stops working (within 5 s on every replica)
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
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.admin import json_response, require_admin
from proxy.calls import authenticate, parse_json_object, read_body, request_id_of
from proxy.chargeback import chargeback_csv, chargeback_json
from proxy.errors import InvalidRequest, NotFound, ServiceUnavailable
from proxy.keys import KeyRecord, create_key, disable_key, rotate_key
from proxy.services import Services
from proxy.spend import Ledger
from proxy.spend_views import (
    NewKey,
    Rotation,
    budget_view,
    day_start,
    department_view,
    dimension,
    month_start,
    parse_body,
    parse_instant,
    recent,
    spend_rows,
    time_range,
    total_micros,
)

MAX_ADMIN_BODY = 64 * 1024


def ledger_of(services: Services) -> Ledger:
    if services.spend is None:
        raise ServiceUnavailable("Spend tracking is not running.", code="spend_disabled")
    ledger: Ledger = services.spend
    return ledger


async def json_body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_ADMIN_BODY)
    return parse_json_object(raw) if raw else {}


def key_view(record: KeyRecord) -> dict[str, Any]:
    view = record.public()
    view["active"] = record.usable(time.time())
    return view


async def known_key(services: Services, key_id: str) -> KeyRecord:
    record = await services.keys.get(key_id)
    if record is None:
        raise NotFound(f"No key with id '{key_id}'.", param="id", code="key_not_found")
    return record


# ---- keys ----------------------------------------------------------------------------------

def checked_new_key(services: Services, spec: NewKey) -> tuple[str | None, float | None]:
    department = spec.department
    if not spec.admin and department is None:
        raise InvalidRequest("Missing required parameter: 'department'.", param="department",
                             code="missing_required_parameter")
    if department is not None and services.department(department) is None:
        known = ", ".join(services.config.departments.names)
        raise InvalidRequest(f"Unknown department '{department}'; known: {known}.",
                             param="department", code="invalid_value")
    expires = spec.expires_at
    expires_at = (parse_instant(expires, "expires_at") if isinstance(expires, str)
                  else None if expires is None else float(expires))
    if expires_at is not None and expires_at <= time.time():
        raise InvalidRequest("Invalid 'expires_at': it is in the past.", param="expires_at",
                             code="invalid_value")
    return department, expires_at


async def create_key_endpoint(request: Request) -> Response:
    services, _ = await require_admin(request)
    spec = parse_body(NewKey, await json_body(request))
    department, expires_at = checked_new_key(services, spec)
    raw, record = await create_key(services.keys, department, user=spec.user, admin=spec.admin,
                                   expires_at=expires_at)
    return json_response({**key_view(record), "key": raw,
                          "note": "Store this key now: it is shown only once."}, 201)


async def list_keys(request: Request) -> Response:
    services, _ = await require_admin(request)
    keys = [key_view(r) for r in await services.keys.list()]
    return json_response({"object": "list", "data": keys})


async def rotate_key_endpoint(request: Request) -> Response:
    services, _ = await require_admin(request)
    key_id = request.path_params["key_id"]
    spec = parse_body(Rotation, await json_body(request))
    await known_key(services, key_id)
    rotated = await rotate_key(services.keys, key_id, float(spec.grace_seconds))
    assert rotated is not None
    raw, record = rotated
    old = await known_key(services, key_id)
    return json_response({**key_view(record), "key": raw, "replaces": key_view(old),
                          "note": "Store this key now: it is shown only once."}, 201)


async def disable_key_endpoint(request: Request) -> Response:
    services, _ = await require_admin(request)
    key_id = request.path_params["key_id"]
    await known_key(services, key_id)
    record = await disable_key(services.keys, key_id)
    assert record is not None
    return json_response(key_view(record))


# ---- spend and budgets -----------------------------------------------------------------------

async def departments_view(ledger: Ledger, names: tuple[str, ...],
                           now: float) -> list[dict[str, Any]]:
    month = await ledger.records(month_start(now), now + 1.0)
    return [department_view(name, month, day_start(now), await ledger.budget_status(name),
                            await ledger.is_paused(name)) for name in names]


async def spend(request: Request) -> Response:
    services, _ = await require_admin(request)
    ledger = ledger_of(services)
    params = dict(request.query_params)
    by = dimension(params)
    start, end = time_range(params)
    department = params.get("department") or None
    records = await ledger.records(start, end, department)
    names = (department,) if department else services.config.departments.names
    return json_response({
        "from": start, "to": end, "by": by, "rows": spend_rows(records, by),
        "total_usd": total_micros(records) / 1e6, "requests": len(records),
        "departments": await departments_view(ledger, names, time.time()),
        "recent": recent(records)})


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
    return Response(chargeback_csv(report), media_type="text/csv; charset=utf-8",
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
    month = await ledger.records(month_start(now), now + 1.0, name)
    view = department_view(name, month, day_start(now), await ledger.budget_status(name),
                           await ledger.is_paused(name))
    return json_response(view)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/keys", create_key_endpoint, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}/rotate", rotate_key_endpoint, methods=["POST"]),
        Route("/admin/keys/{key_id}/disable", disable_key_endpoint, methods=["POST"]),
        Route("/admin/spend", spend, methods=["GET"]),
        Route("/admin/budgets", budgets, methods=["GET"]),
        Route("/admin/departments/{name}/resume", resume, methods=["POST"]),
        Route("/admin/chargeback", chargeback, methods=["GET"]),
        Route("/v1/spend", own_spend, methods=["GET"]),
    ]
