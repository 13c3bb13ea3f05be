"""`meterline mcp sonarqube`: run the server on stdio (default) or streamable HTTP.

The process owns its metrics: on streamable HTTP they are served at ``/metrics`` next to the
MCP endpoint; on stdio (where stdout is the protocol) ``--metrics-port`` starts a small HTTP
server for them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

TRANSPORTS = ("stdio", "streamable-http")


def add_parser(sub: Any) -> None:
    mcp = sub.add_parser("mcp", help="run an MCP server (sonarqube)")
    servers = mcp.add_subparsers(dest="server", required=True)
    sonar = servers.add_parser(
        "sonarqube",
        help="MCP server for SonarQube/SonarCloud: quality, security issues, LLM fixes",
        description="Environment: SONAR_HOST_URL, SONAR_TOKEN (required), SONAR_ORGANIZATION "
        "(SonarCloud), SONAR_TIMEOUT_S (10); MET_MCP_PROXY_URL (http://127.0.0.1:8080), "
        "MET_MCP_API_KEY (engineering key for suggest_fixes), MET_MCP_MODEL (gpt-4o-mini).")
    sonar.add_argument("--transport", choices=TRANSPORTS, default="stdio",
                       help="stdio (default; the client starts the server) or streamable-http")
    sonar.add_argument("--host", default="127.0.0.1", help="streamable-http bind address")
    sonar.add_argument("--port", type=int, default=8765, help="streamable-http port (8765)")
    sonar.add_argument("--path", default="/mcp", help="streamable-http endpoint path (/mcp)")
    sonar.add_argument("--metrics-port", type=int, default=None,
                       help="stdio only: serve Prometheus /metrics on this port (127.0.0.1, "
                       "or --host)")
    sonar.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from proxy.mcp_sonarqube.server import build_server
    from proxy.mcp_sonarqube.settings import SonarSettings
    from proxy.metrics import Metrics
    from proxy.settings import Settings

    base = Settings.from_env()
    settings = SonarSettings.from_env(base.env)
    if args.metrics_port and args.transport != "stdio":
        print("meterline: --metrics-port is for stdio; streamable-http serves /metrics on "
              "--port", file=sys.stderr)
        return 2
    server = build_server(settings, Metrics(), log_level=base.log_level)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    if args.transport == "stdio":
        asyncio.run(_stdio(server, args.host, args.metrics_port))
        return 0
    app = server.streamable_http_app(streamable_http_path=args.path, host=args.host)
    print(f"meterline mcp sonarqube on http://{args.host}:{args.port}{args.path} "
          f"(metrics on /metrics; SonarQube {settings.sonar_url})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                server_header=False, timeout_graceful_shutdown=5)
    return 0


async def _stdio(server: Any, host: str, metrics_port: int | None) -> None:
    """The MCP session on stdin/stdout; with ``metrics_port``, /metrics beside it until the
    client closes stdin."""
    if metrics_port is None:
        await server.run_stdio_async()
        return
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    metrics = server.metrics

    async def endpoint(_: Any) -> Any:
        from starlette.responses import Response

        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app = Starlette(routes=[Route("/metrics", endpoint)])
    http = uvicorn.Server(uvicorn.Config(app, host=host, port=metrics_port, log_level="warning",
                                         access_log=False, lifespan="off"))
    task = asyncio.create_task(http.serve())
    try:
        await server.run_stdio_async()
    finally:
        http.should_exit = True
        await task
