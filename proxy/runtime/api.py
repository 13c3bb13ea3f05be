"""Admin endpoint for the config: validate and swap in the directory (or preview the diff)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.config.errors import ConfigError
from proxy.errors import InvalidRequest
from proxy.http import json_response, require_admin
from proxy.runtime.reload import preview, reload_and_diff


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
    return [Route("/admin/reload", reload, methods=["POST"])]
