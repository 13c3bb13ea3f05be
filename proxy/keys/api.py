"""Admin endpoints for inbound keys; the logic lives in proxy.keys.store.

    POST /admin/keys                         create a key (the raw key is in this answer only)
    GET  /admin/keys                         keys without raw values or full hashes
    POST /admin/keys/{id}/rotate             new key; the old one works for grace_seconds
    POST /admin/keys/{id}/disable            the key stops working (within 5 s on every replica)
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.errors import InvalidRequest, NotFound
from proxy.http import json_body, json_response, parse_body, require_admin
from proxy.keys.store import KeyRecord, create_key, disable_key, rotate_key
from proxy.runtime.services import Services
from proxy.spend.views import parse_instant

MAX_GRACE_SECONDS = 30 * 86_400


class NewKey(BaseModel):
    """POST /admin/keys body."""

    model_config = ConfigDict(extra="forbid")

    department: StrictStr | None = None
    user: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    expires_at: StrictInt | StrictFloat | StrictStr | None = None
    admin: StrictBool = False


class Rotation(BaseModel):
    """POST /admin/keys/{id}/rotate body."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: StrictInt | StrictFloat = Field(default=0, ge=0, le=MAX_GRACE_SECONDS)


def key_view(record: KeyRecord) -> dict[str, Any]:
    view = record.public()
    view["active"] = record.usable(time.time())
    return view


async def known_key(services: Services, key_id: str) -> KeyRecord:
    record = await services.keys.get(key_id)
    if record is None:
        raise NotFound(f"No key with id '{key_id}'.", param="id", code="key_not_found")
    return record


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



def routes() -> list[BaseRoute]:
    return [
        Route("/admin/keys", create_key_endpoint, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}/rotate", rotate_key_endpoint, methods=["POST"]),
        Route("/admin/keys/{key_id}/disable", disable_key_endpoint, methods=["POST"]),
    ]
