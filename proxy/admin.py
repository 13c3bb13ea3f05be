"""Admin API under /admin/, guarded by an admin key. Handlers are small; logic lives elsewhere."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.calls import authenticate, request_id_of
from proxy.config_errors import ConfigError
from proxy.errors import AuthenticationFailed, InvalidRequest
from proxy.keys import Principal
from proxy.reload import preview, reload_and_diff
from proxy.services import Services


def json_response(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


async def require_admin(request: Request) -> tuple[Services, Principal]:
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    if not principal.admin:
        raise AuthenticationFailed("This endpoint needs an admin key.", code="admin_key_required")
    return services, principal


async def reload(request: Request) -> Response:
    """Validate and swap in the config directory; `?dry_run=true` only shows the changes."""
    services, _ = await require_admin(request)
    dry_run = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
    try:
        changes = preview(services) if dry_run else await reload_and_diff(services)
    except ConfigError as exc:
        raise InvalidRequest(
            f"Config rejected, old config stays live:\n{exc}", code="invalid_config"
        ) from None
    return json_response(
        {
            "reloaded": not dry_run,
            "old_version": changes["version"]["old"],
            "version": services.config.version,
            "changes": changes,
        }
    )


def routes() -> list[BaseRoute]:
    from proxy import insights_api, spend_api  # they import require_admin from here

    return [
        Route("/admin/reload", reload, methods=["POST"]),
        *spend_api.routes(),
        *insights_api.routes(),
    ]
