"""The MCP server: four tools on the SDK's ``MCPServer``, each call counted in Prometheus.

The clients (SonarQube, Meterline) are created in the server's lifespan and reach the tools
through the request ``Context``. Anticipated failures (:class:`ToolFailure`) become tool errors
with their message; anything else is the SDK's generic tool error, logged with its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from proxy.mcp_sonarqube import tools
from proxy.mcp_sonarqube.errors import SonarQubeError, ToolFailure
from proxy.mcp_sonarqube.fixes import MeterlineClient
from proxy.mcp_sonarqube.models import (
    FixSuggestion,
    ProjectList,
    ProjectQuality,
    SecurityFindings,
    Severity,
)
from proxy.mcp_sonarqube.settings import SonarSettings
from proxy.mcp_sonarqube.sonarqube import SonarQubeClient
from proxy.metrics import Metrics

NAME = "meterline-sonarqube"
INSTRUCTIONS = (
    "Answers questions about code quality and security in SonarQube. Find project keys with "
    "list_projects, then use get_project_quality or find_security_issues; pass an issue key "
    "or hotspot key from find_security_issues to suggest_fixes for an explanation and a patch."
)
logger = logging.getLogger(__name__)
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)


@dataclass
class Clients:
    sonar: SonarQubeClient
    llm: MeterlineClient

    async def close(self) -> None:
        await self.sonar.close()
        await self.llm.close()


ToolContext = Context[Clients, Any]


def outcome_of(exc: BaseException) -> str:
    """The metrics outcome of a failed call, from the exception and its causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ToolFailure):
            return seen.outcome
        if isinstance(seen, ValidationError):
            return "invalid_input"
        seen = seen.__cause__
    if isinstance(exc, UnexpectedToolError) or not isinstance(exc, ToolError):
        return "error"
    return "invalid_input"  # the SDK's own ToolError: an unknown tool name


@contextmanager
def reported() -> Iterator[None]:
    """Turn an anticipated failure into a ToolError, whose message the client sees; an answer
    the tools can't read counts as a SonarQube failure, not a crash."""
    try:
        yield
    except ToolFailure as exc:
        raise ToolError(exc.message) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # JSON that parsed but isn't shaped like the documented answer (another API version?)
        logger.warning("unexpected SonarQube answer: %r", exc)
        failure = SonarQubeError("sonarqube_error", (
            f"SonarQube answered in a shape this server does not understand "
            f"({type(exc).__name__}). Check that SONAR_HOST_URL points at SonarQube 10.2+ or "
            "SonarCloud."))
        raise ToolError(failure.message) from failure


class SonarQubeServer(MCPServer[Clients]):
    """``MCPServer`` that times every tool call and counts it by tool and outcome."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Clients, Any] | None = None,
                        ) -> CallToolResult | InputRequiredResult:
        started = time.perf_counter()
        try:
            result = await super().call_tool(name, arguments, context)
        except Exception as exc:
            self._record(name, outcome_of(exc), started)
            raise
        self._record(name, "ok", started)
        return result

    def _record(self, name: str, outcome: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.record_tool_call(name, outcome, seconds)
        logger.info("tool %r: %s in %.3f s", name, outcome, seconds)


def clients_of(ctx: ToolContext) -> Clients:
    return ctx.request_context.lifespan_context


# -- the tools -------------------------------------------------------------------------------


async def get_project_quality(
    project_key: Annotated[str, Field(min_length=1, description=(
        "SonarQube project key, e.g. 'acme:payments' (find keys with list_projects)"))],
    ctx: ToolContext,
) -> ProjectQuality:
    """Quality gate status (with its failing and passing conditions) and the main measures of
    a project: bugs, vulnerabilities, code smells, security hotspots, coverage, duplicated
    lines, lines of code and the A-E reliability, security and maintainability ratings."""
    with reported():
        return await tools.project_quality(clients_of(ctx).sonar, project_key)


async def find_security_issues(
    ctx: ToolContext,
    severity: Annotated[Severity, Field(description=(
        "lowest severity to list: HIGH lists only HIGH; MEDIUM lists HIGH and MEDIUM; LOW "
        "lists all. Vulnerabilities use their security impact severity, hotspots their "
        "vulnerability probability"))] = "HIGH",
    project_key: Annotated[str | None, Field(min_length=1, description=(
        "limit to one project (needed for security hotspots); omit to search every project "
        "the token can see"))] = None,
    page: Annotated[int, Field(ge=1, le=500, description="page number, 20 findings per page"
                               )] = 1,
) -> SecurityFindings:
    """Open vulnerabilities and security hotspots to review, at or above a severity, with
    file, line, rule and message. Paginated; has_more says whether to ask for the next page."""
    with reported():
        return await tools.security_findings(clients_of(ctx).sonar, severity, project_key, page)


async def suggest_fixes(
    issue_id: Annotated[str, Field(min_length=1, max_length=200, description=(
        "a vulnerability's or hotspot's key from find_security_issues"))],
    ctx: ToolContext,
) -> FixSuggestion:
    """Explain an issue (or security hotspot) and propose a patch: fetches it, its rule
    description and the code around it from SonarQube, then asks an LLM through Meterline
    (charged to the engineering department, cached like any other request). Returns the
    explanation, a unified diff when the model proposed one, and what the answer cost."""
    clients = clients_of(ctx)
    with reported():
        return await tools.fix_suggestion(clients.sonar, clients.llm, issue_id)


async def list_projects(
    ctx: ToolContext,
    query: Annotated[str | None, Field(min_length=2, description=(
        "part of a project name, or an exact project key; omit to list all"))] = None,
    page: Annotated[int, Field(ge=1, le=500, description="page number, 20 projects per page"
                               )] = 1,
) -> ProjectList:
    """Find SonarQube projects and their keys (the other tools take a project key)."""
    with reported():
        return await tools.projects(clients_of(ctx).sonar, query, page)


# -- assembly --------------------------------------------------------------------------------


def build_server(settings: SonarSettings, metrics: Metrics,
                 log_level: str = "INFO") -> SonarQubeServer:
    @asynccontextmanager
    async def lifespan(_: MCPServer[Clients]) -> AsyncIterator[Clients]:
        clients = Clients(
            sonar=SonarQubeClient(settings.sonar_url, settings.sonar_token,
                                  timeout_s=settings.timeout_s,
                                  organization=settings.organization),
            llm=MeterlineClient(settings.proxy_url, settings.api_key, settings.model,
                                timeout_s=settings.llm_timeout_s))
        try:
            yield clients
        finally:
            await clients.close()

    server = SonarQubeServer(metrics, name=NAME, instructions=INSTRUCTIONS, lifespan=lifespan,
                             log_level=_sdk_level(log_level))
    for tool in (get_project_quality, find_security_issues, suggest_fixes, list_projects):
        server.add_tool(tool, annotations=READ_ONLY, structured_output=True)
    metrics.precreate_mcp_tools()

    async def metrics_endpoint(_: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    server.custom_route("/metrics", methods=["GET"])(metrics_endpoint)
    return server


def _sdk_level(level: str) -> Any:
    upper = level.upper()
    return upper if upper in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"
