"""create_app(settings) -> Starlette: routes, handlers, lifespan. Wiring only, no logic."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route

from proxy import admin, health, pipeline, routing_api
from proxy.cache import api as cache_api
from proxy.errors import ProxyError, handle_http_exception, handle_proxy_error, handle_unexpected
from proxy.lifecycle import start_services, stop_services
from proxy.mock_upstream import create_mock_app
from proxy.reload import start_triggers
from proxy.settings import Settings
from proxy.ui import handlers as ui


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = await start_services(settings)
        triggers = start_triggers(app.state.services)
        try:
            yield
        finally:
            await triggers.stop()
            await stop_services(app.state.services)

    routes = [
        Route("/v1/chat/completions", pipeline.chat_completions, methods=["POST"]),
        Route("/v1/completions", pipeline.completions, methods=["POST"]),
        Route("/v1/embeddings", pipeline.embeddings, methods=["POST"]),
        Route("/v1/responses", pipeline.responses, methods=["POST"]),
        Route("/v1/models", pipeline.list_models, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        *admin.routes(),
        *cache_api.routes(),
        *routing_api.routes(),
        *ui.routes(),
    ]
    if settings.demo:
        routes.append(Mount("/_mock", create_mock_app()))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ProxyError: handle_proxy_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
