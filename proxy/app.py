"""create_app(settings) -> Starlette: routes, handlers, lifespan. Wiring only, no logic."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from proxy.cache import api as cache_api
from proxy.chat import api as chat_api
from proxy.demo.upstream import create_mock_app
from proxy.errors import (
    ProxyError,
    handle_http_exception,
    handle_proxy_error,
    handle_unexpected,
    request_id_headers,
)
from proxy.gateway import pipeline
from proxy.gateway.requests import REQUEST_ID_HEADER, client_request_id_of, request_id_of
from proxy.insights import api as insights_api
from proxy.keys import api as keys_api
from proxy.routing import api as routing_api
from proxy.runtime import api as runtime_api
from proxy.runtime import health, logs
from proxy.runtime.lifecycle import start_services, stop_services
from proxy.runtime.reload import start_triggers
from proxy.runtime.services import Services
from proxy.settings import Settings
from proxy.spend import api as spend_api
from proxy.ui import handlers as ui

Endpoint = Callable[[Request], Awaitable[Response]]


class ProxyApp(Starlette):
    """Starlette, plus a direct path for the POST endpoints every API call takes.

    The OpenAI endpoints are exact paths with one method, so they need no router, and their
    errors are handled by the same handlers: serving them before Starlette's middleware stack
    and router saves 6-7 us of CPU per request, 2-3 % of a chat request's ~250 us
    (scripts/bench_dispatch.py: 2.6-3.0 us vs 8.8-10.5 us routed, 2026-12-05): kept for that.
    Everything else, including 405s on these paths, goes through Starlette.
    """

    def __init__(self, *, direct: dict[str, Endpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct = direct
        self.services: Services | None = None  # = state.services, without State's __getattr__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            endpoint = self.direct.get(path)
            if endpoint is not None:
                scope["app"] = self
                await serve_direct(endpoint, scope, receive, send)
                return
        if scope["type"] == "http":
            send = with_request_id(scope, send)
        await super().__call__(scope, receive, send)


def with_request_id(scope: Scope, send: Send) -> Send:
    """`send`, adding the request-id headers to a response that has none: `x-meterline-request-id`
    (the server's id) and `x-request-id` (the client's own id if it sent one, else the server's),
    so every endpoint and every status carries them."""
    header = REQUEST_ID_HEADER.encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name.lower() == header for name, _ in headers):
                request = Request(scope)
                rid = request_id_of(request)
                ids = request_id_headers(rid, client_request_id_of(request))
                headers += [(k.encode(), v.encode("latin-1")) for k, v in ids.items()]
                message = {**message, "headers": headers}
        await send(message)

    return send_with_id


async def serve_direct(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    if not logs.access_enabled():
        await answer(endpoint, scope, receive, send)
        return
    started = time.perf_counter()
    status = 0

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await answer(endpoint, scope, receive, sending)
    finally:  # a stream's line is written once it has ended (or the client left)
        logs.log_access(scope, status, time.perf_counter() - started)


async def answer(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive, send)
    try:
        response = await endpoint(request)
    except ProxyError as exc:
        response = await handle_proxy_error(request, exc)
    except Exception as exc:  # same as Starlette's catch-all handler: a 500 in OpenAI's shape
        response = await handle_unexpected(request, exc)
        for name, value in request_id_headers(request_id_of(request),
                                              client_request_id_of(request)).items():
            response.headers.setdefault(name, value)
    await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = await start_services(settings)
        if isinstance(app, ProxyApp):
            app.services = app.state.services
        triggers = start_triggers(app.state.services)
        try:
            yield
        finally:
            await triggers.stop()
            await stop_services(app.state.services)

    direct: dict[str, Endpoint] = {
        "/v1/chat/completions": pipeline.chat_completions,
        "/v1/completions": pipeline.completions,
        "/v1/embeddings": pipeline.embeddings,
        "/v1/responses": pipeline.responses,
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in direct.items()),
        Route("/v1/models", pipeline.list_models, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        *runtime_api.routes(),
        *keys_api.routes(),
        *spend_api.routes(),
        *insights_api.routes(),
        *cache_api.routes(),
        *chat_api.routes(),
        *routing_api.routes(),
        *ui.routes(),
    ]
    if settings.demo:
        routes.append(Mount("/_mock", create_mock_app()))
    return ProxyApp(
        direct=direct,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ProxyError: handle_proxy_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
