"""Small helpers shared by every package's endpoints: JSON in and out, the admin check, query
parameters with bounds. Endpoints import these; nothing here imports an endpoint module."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, PermissionDenied
from proxy.gateway.requests import authenticate, parse_json_object, read_body, request_id_of
from proxy.keys.store import Principal
from proxy.runtime.services import Services

MAX_ADMIN_BODY = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def json_response(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


async def json_body(request: Request, limit: int = MAX_ADMIN_BODY) -> dict[str, Any]:
    """The request's JSON object, `{}` for an empty body; 400 for anything else."""
    raw = await read_body(request, limit)
    return parse_json_object(raw) if raw else {}


async def require_admin(request: Request) -> tuple[Services, Principal]:
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    if not principal.admin:
        raise PermissionDenied("This endpoint needs an admin key.", code="admin_key_required")
    return services, principal


def number_param(params: Mapping[str, str], name: str, default: float, low: float, high: float,
                 *, include_low: bool = True, include_high: bool = True) -> float:
    """`params[name]` as a float within the bounds, `default` when absent; 400 otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan  # fails every comparison below
    above = low <= value if include_low else low < value
    below = value <= high if include_high else value < high
    if not (above and below):
        if include_low and include_high:
            bounds = f"from {low:g} to {high:g}"
        else:
            bounds = (f"in {'[' if include_low else '('}{low:g}, {high:g}"
                      f"{']' if include_high else ')'}")
        raise InvalidRequest(f"Invalid '{name}': expected a number {bounds}, got '{raw}'.",
                             param=name, code="invalid_value")
    return value


def parse_body(model: type[M], body: dict[str, Any]) -> M:
    """Validate a JSON body; the first problem becomes a 400 naming its field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or None
        if err["type"] == "extra_forbidden":
            raise InvalidRequest(f"Unrecognized request argument supplied: '{field}'.",
                                 param=field, code="unknown_parameter") from None
        raise InvalidRequest(f"Invalid '{field}': {err['msg']}.", param=field,
                             code="invalid_value") from None
