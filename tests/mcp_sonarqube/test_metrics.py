"""Tool calls are counted by tool and outcome and timed, and the MCP process exposes them:
on streamable HTTP at /metrics beside /mcp, on stdio with --metrics-port."""

from __future__ import annotations

import httpx
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from tests.mcp_sonarqube.conftest import ServerLog, server_env, start_http_server, stdio_session
from tests.mcp_sonarqube.test_server import Sonar, error, ok
from tests.support.servers import free_port
from tests.support.sonarqube_standin import PAYMENTS


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def calls(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], tool: str,
          outcome: str) -> float | None:
    return scraped.get(("meterline_mcp_tool_calls_total",
                        (("outcome", outcome), ("tool", tool))))


async def test_streamable_http_serves_tool_metrics_on_the_same_app(
        sonar: Sonar, sonar_token: str, server_log: ServerLog) -> None:
    process, base = start_http_server(server_env(sonar[1], sonar_token), server_log)
    try:
        async with streamable_http_client(f"{base}/mcp") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await ok(session, "get_project_quality", project_key=PAYMENTS)
                await error(session, "get_project_quality", project_key="acme:nope")
                await error(session, "get_project_quality", project_key="")
                await error(session, "made_up_tool")
        response = httpx.get(f"{base}/metrics")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    scraped = samples(response.text)
    assert calls(scraped, "get_project_quality", "ok") == 1
    assert calls(scraped, "get_project_quality", "not_found") == 1
    assert calls(scraped, "get_project_quality", "invalid_input") == 1
    assert calls(scraped, "other", "invalid_input") == 1  # unknown names stay bounded
    assert calls(scraped, "suggest_fixes", "ok") == 0  # pre-created, so the panel starts at 0
    assert scraped[("meterline_mcp_tool_duration_seconds_count",
                    (("tool", "get_project_quality"),))] == 3
    assert not any("made_up_tool" in str(labels) for _, labels in scraped)


async def test_stdio_serves_tool_metrics_on_the_metrics_port(
        sonar: Sonar, sonar_token: str, server_log: ServerLog) -> None:
    port = free_port()
    sonar[0].fail("api/components/search", 401)
    async with stdio_session(server_env(sonar[1], sonar_token), server_log,
                             "--metrics-port", str(port)) as session:
        await error(session, "list_projects")
        await ok(session, "list_projects", query="web")
        scraped = samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    assert calls(scraped, "list_projects", "ok") == 1
    assert calls(scraped, "list_projects", "auth_failed") == 1
