"""CPU per request of dispatch alone: ProxyApp's direct path vs Starlette's middleware + router.

    python scripts/bench_dispatch.py

A trivial endpoint, 40 other routes (about as many as the app mounts), 20,000 requests per
variant through the ASGI interface, process time per request. Decides whether ProxyApp's bypass
is worth its code (proxy/app.py states the number)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.app import ProxyApp
from proxy.errors import ProxyError, handle_http_exception, handle_proxy_error, handle_unexpected

OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
SCOPE: dict[str, Any] = {
    "type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": "",
    "headers": [(b"content-type", b"application/json")], "query_string": b"",
    "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80),
    "client": ("127.0.0.1", 1),
}


async def endpoint(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


def build(direct: bool) -> Starlette:
    routes = [Route(p, endpoint, methods=["POST"]) for p in OPENAI_PATHS]
    routes += [Route(f"/admin/x{i}", endpoint) for i in range(40)]
    handlers: dict[Any, Any] = {ProxyError: handle_proxy_error,
                                HTTPException: handle_http_exception,
                                Exception: handle_unexpected}
    if direct:
        return ProxyApp(direct={p: endpoint for p in OPENAI_PATHS}, routes=routes,
                        exception_handlers=handlers)
    return Starlette(routes=routes, exception_handlers=handlers)


async def cpu_us_per_request(app: Starlette, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    for _ in range(200):
        await app(dict(SCOPE), receive, send)
    start = time.process_time()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return (time.process_time() - start) / n * 1e6


async def main() -> None:
    for _ in range(3):
        bypass = await cpu_us_per_request(build(True), 20_000)
        routed = await cpu_us_per_request(build(False), 20_000)
        print(f"bypass {bypass:.1f} us/req  router+middleware {routed:.1f} us/req  "
              f"saved {routed - bypass:.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
