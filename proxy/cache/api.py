"""HTTP handlers for the cache: analytics, wrong-answer reports (any key, own requests), purge
(admin). Each handler parses, checks who is asking, and calls proxy.cache.ops."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.cache import ops
from proxy.cache.semantic_cache import SemanticCache
from proxy.errors import InvalidRequest, NotFound, PermissionDenied
from proxy.gateway.requests import authenticate, read_json_body, request_id_of
from proxy.http import json_response
from proxy.runtime.services import Services

PURGE_FIELDS = ("entry_id", "scope", "department", "all")


async def _viewer(request: Request) -> tuple[Services, SemanticCache, ops.Viewer]:
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    if services.cache is None:
        raise NotFound("The answer cache is disabled (rules/cache.yaml: enabled: false).",
                       code="cache_disabled")
    return services, services.cache, ops.Viewer(None if principal.admin
                                                else principal.department or "")


async def analytics(request: Request) -> Response:
    services, cache, viewer = await _viewer(request)
    return json_response(await ops.analytics(cache, viewer, services.metrics))


async def report(request: Request) -> Response:
    services, cache, viewer = await _viewer(request)
    _, body = await read_json_body(request, 64 * 1024)
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequest("Missing required parameter: 'request_id' (a string).",
                             param="request_id", code="missing_required_parameter")
    try:
        result = await ops.report(cache, request_id, viewer, services.metrics)
    except ops.EntryNotFound:
        raise NotFound(f"No cached answer was served for request '{request_id}' to this key.",
                       param="request_id") from None
    return json_response(result)


async def _purge_args(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = {k: v for k, v in request.query_params.items() if k in PURGE_FIELDS}
    if request.headers.get("content-length", "0") not in ("", "0"):
        _, body = await read_json_body(request, 64 * 1024)
        args.update(body)
    unknown = sorted(set(args) - set(PURGE_FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown purge field '{unknown[0]}'; use one of "
                             f"{', '.join(PURGE_FIELDS)}.", param=unknown[0], code="unknown_field")
    chosen = [k for k in PURGE_FIELDS if args.get(k) not in (None, "", False, "false")]
    if len(chosen) != 1:
        raise InvalidRequest("Say what to purge with exactly one of entry_id, scope, "
                             "department or all=true.", param="all", code="invalid_value")
    name = chosen[0]
    if name != "all" and not isinstance(args[name], str):
        raise InvalidRequest(f"Invalid type for '{name}': expected a string.", param=name,
                             code="invalid_type")
    return {name: args[name]}


async def purge(request: Request) -> Response:
    services, cache, viewer = await _viewer(request)
    if not viewer.admin:
        raise PermissionDenied("This endpoint needs an admin key.", code="admin_key_required")
    args = await _purge_args(request)
    deleted = await ops.purge(cache, entry_id=args.get("entry_id"), scope=args.get("scope"),
                              department=args.get("department"), everything="all" in args)
    services.metrics.set_cache_entries("global", await cache.backend.count())
    return json_response({"object": "cache.purge", "deleted": deleted, **args})


async def reset_thresholds(request: Request) -> Response:
    """Undo every threshold that wrong-answer reports raised (they also expire on their own)."""
    _, cache, viewer = await _viewer(request)
    if not viewer.admin:
        raise PermissionDenied("This endpoint needs an admin key.", code="admin_key_required")
    return json_response({"object": "cache.thresholds.reset",
                          "reset": await ops.reset_thresholds(cache)})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/cache/analytics", analytics, methods=["GET"]),
        Route("/v1/cache/report", report, methods=["POST"]),
        Route("/admin/cache", purge, methods=["DELETE"]),
        Route("/admin/cache/thresholds", reset_thresholds, methods=["DELETE"]),
    ]
