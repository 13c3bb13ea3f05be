"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from proxy.http import json_response
from proxy.runtime.services import Services


async def healthz(request: Request) -> Response:
    """Liveness; `demo` tells clients (the keys CLI) that the published demo keys work here."""
    services: Services = request.app.state.services
    return json_response({"status": "ok", "demo": services.settings.demo})


async def readyz(request: Request) -> Response:
    """Ready when Redis (if configured) answers and every provider has a credential."""
    services: Services = request.app.state.services
    if services.draining:
        return json_response({"status": "draining", "checks": {},
                              "config_version": services.config.version}, 503)
    checks: dict[str, str] = {}
    if services.redis is not None:
        try:
            await services.redis.ping()
            checks["redis"] = "ok"
        except (OSError, ConnectionError) as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - any client error means "not ready"
            checks["redis"] = f"error: {type(exc).__name__}"
    else:
        checks["redis"] = "embedded"
    used = {t.provider for e in services.config.providers.models.values() for t in e.targets}
    for name in sorted(used):
        has_key = services.settings.demo or services.credential(name, None) is not None
        if not has_key:
            checks[f"upstream:{name}"] = "no credential"
            continue
        reachable = await can_connect(str(services.provider(name).base_url))
        checks[f"upstream:{name}"] = "ok" if reachable else "unreachable"
    ready = checks["redis"] in ("ok", "embedded") and any(
        v == "ok" for k, v in checks.items() if k.startswith("upstream:"))
    return json_response({"status": "ready" if ready else "not ready", "checks": checks,
                  "config_version": services.config.version}, 200 if ready else 503)


async def can_connect(url: str, timeout_s: float = 1.0) -> bool:
    """A TCP connect to the provider's host: reachable without spending a request."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    if services.spend is not None:
        services.spend.report_budgets()
    body, content_type = services.metrics.render()
    return Response(body, headers={"content-type": content_type})
