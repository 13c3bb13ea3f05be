"""The MCP server through the real `mcp` client SDK, over stdio and streamable HTTP, against the
SonarQube stand-in: tools and schemas, each tool's answer, bad input, SonarQube failures."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.client import ClientSession
from mcp_types import CallToolResult

from tests.mcp_sonarqube.conftest import ServerLog, Transport, server_env, session_for
from tests.support.sonarqube_standin import (
    CONFIG_FILE,
    DB_FILE,
    PAYMENTS,
    SQL_ISSUE,
    SonarQubeStandin,
)

Sonar = tuple[SonarQubeStandin, str]
TOOLS = {"get_project_quality", "find_security_issues", "suggest_fixes", "list_projects"}


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def ok(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def error(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    return text_of(result)


async def test_tools_are_listed_with_typed_inputs_and_output_schemas(
        sonar: Sonar, sonar_token: str, transport: Transport, server_log: ServerLog) -> None:
    async with session_for(transport, server_env(sonar[1], sonar_token), server_log) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():
        assert tool.description and len(tool.description) > 40
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
    quality = listed["get_project_quality"].input_schema
    assert quality["required"] == ["project_key"]
    security = listed["find_security_issues"].input_schema
    assert security.get("required", []) == []
    assert security["properties"]["severity"]["default"] == "HIGH"
    assert security["properties"]["severity"]["enum"] == ["HIGH", "MEDIUM", "LOW"]
    assert security["properties"]["page"]["minimum"] == 1
    assert listed["suggest_fixes"].input_schema["required"] == ["issue_id"]
    assert "explanation" in listed["suggest_fixes"].output_schema["properties"]
    assert "quality_gate" in listed["get_project_quality"].output_schema["properties"]


async def test_each_tool_answers_from_sonarqube(
        sonar: Sonar, sonar_token: str, transport: Transport, server_log: ServerLog) -> None:
    standin, url = sonar
    async with session_for(transport, server_env(url, sonar_token), server_log) as session:
        quality = await ok(session, "get_project_quality", project_key=PAYMENTS)
        high = await ok(session, "find_security_issues", project_key=PAYMENTS)
        low = await ok(session, "find_security_issues", project_key=PAYMENTS, severity="LOW")
        everywhere = await ok(session, "find_security_issues", severity="MEDIUM")
        projects = await ok(session, "list_projects")
        matching = await ok(session, "list_projects", query="pay")

    assert quality["name"] == "Payments Service"
    assert quality["quality_gate"]["status"] == "ERROR"
    failing = [c for c in quality["quality_gate"]["conditions"] if c["status"] == "ERROR"]
    assert failing == [{"metric": "new_security_rating", "status": "ERROR", "comparator": "GT",
                        "threshold": "1", "actual": "5"}]
    assert (quality["bugs"], quality["vulnerabilities"], quality["code_smells"]) == (3, 4, 57)
    assert quality["coverage_percent"] == 71.4 and quality["duplicated_lines_percent"] == 2.8
    assert quality["ratings"] == {"reliability": "C", "security": "E", "maintainability": "A",
                                  "security_review": "D"}
    assert quality["url"] == f"{url}/dashboard?id={PAYMENTS}"

    assert [(f["key"], f["severity"], f["file"], f["line"]) for f in high["vulnerabilities"][
        "items"]] == [(SQL_ISSUE, "HIGH", DB_FILE, 12),
                      ("AZ3f1-weak-cipher-0002", "HIGH", CONFIG_FILE, 7)]
    assert high["vulnerabilities"]["items"][0]["rule"] == "javasecurity:S3649"
    assert "SQL queries" in high["vulnerabilities"]["items"][0]["message"]
    assert [(h["key"], h["severity"], h["file"], h["line"]) for h in high["hotspots"]["items"]] \
        == [("AZ3h-password-0001", "HIGH", CONFIG_FILE, 4)]
    assert high["has_more"] is False and high["page"] == 1
    assert low["vulnerabilities"]["total"] == 4 and len(low["hotspots"]["items"]) == 2
    assert everywhere["vulnerabilities"]["total"] == 3 and everywhere["hotspots"]["items"] == []
    assert any("project_key" in note for note in everywhere["notes"])
    sent = standin.requests_to("api/issues/search")
    assert sent[0]["query"]["impactSoftwareQualities"] == "SECURITY"
    assert sent[0]["query"]["impactSeverities"] == "HIGH"
    assert sent[1]["query"]["impactSeverities"] == "HIGH,MEDIUM,LOW"
    assert all(r["authorized"] for r in standin.state.requests)

    assert [p["key"] for p in projects["projects"]] == [
        "acme:payments", "acme:web", "acme:legacy-billing"]
    assert projects["total"] == 3
    assert matching["projects"] == [{"key": PAYMENTS, "name": "Payments Service"}]


async def test_pages_through_findings(sonar: Sonar, sonar_token: str,
                                      server_log: ServerLog) -> None:
    standin, url = sonar
    async with session_for("stdio", server_env(url, sonar_token), server_log) as session:
        second = await ok(session, "find_security_issues", project_key=PAYMENTS, severity="LOW",
                          page=2)
    assert second["page"] == 2 and second["vulnerabilities"]["items"] == []
    assert second["vulnerabilities"]["total"] == 4
    assert standin.requests_to("api/issues/search")[0]["query"]["p"] == "2"
    assert standin.requests_to("api/hotspots/search")[0]["query"]["p"] == "2"


@pytest.mark.parametrize("tool,arguments,expect", [
    ("get_project_quality", {}, "project_key"),
    ("get_project_quality", {"project_key": ""}, "project_key"),
    ("find_security_issues", {"severity": "CRITICAL"}, "severity"),
    ("find_security_issues", {"page": 0}, "page"),
    ("list_projects", {"query": "x"}, "query"),
    ("suggest_fixes", {"issue_id": 42}, "issue_id"),
    ("no_such_tool", {}, "no_such_tool"),
])
async def test_bad_input_is_a_tool_error_naming_the_field(
        sonar: Sonar, sonar_token: str, server_log: ServerLog, tool: str,
        arguments: dict[str, Any], expect: str) -> None:
    async with session_for("stdio", server_env(sonar[1], sonar_token), server_log) as session:
        message = await error(session, tool, **arguments)
    assert expect in message
    assert sonar[0].state.requests == []  # refused before asking SonarQube


@pytest.mark.parametrize("fault,expect", [
    (401, ["rejected the token (401", "SONAR_TOKEN"]),
    (500, ["failed on api/measures/component with 500", "An error has occurred",
           "try again later"]),
    (429, ["rate limiting", "Retry after 30 s"]),
    ("slow", ["did not answer api/measures/component within 1 s", "SONAR_TIMEOUT_S"]),
    ("html", ["did not answer with SonarQube JSON", "SONAR_HOST_URL"]),
    ("garbage", ["answered in a shape this server does not understand", "SONAR_HOST_URL"]),
])
async def test_sonarqube_failures_are_clear_tool_errors(
        sonar: Sonar, sonar_token: str, transport: Transport, server_log: ServerLog,
        fault: int | str, expect: list[str]) -> None:
    standin, url = sonar
    standin.fail("api/measures/component", fault)
    async with session_for(transport, server_env(url, sonar_token), server_log) as session:
        message = await error(session, "get_project_quality", project_key=PAYMENTS)
        after = await ok(session, "get_project_quality", project_key=PAYMENTS)  # still serving
    for part in expect:
        assert part in message
    assert "Traceback" not in message and after["name"] == "Payments Service"
    log = server_log.text()
    assert "Traceback" not in log and sonar_token not in log + message


async def test_unknown_project_and_issue_say_where_to_find_keys(
        sonar: Sonar, sonar_token: str, server_log: ServerLog) -> None:
    async with session_for("stdio", server_env(sonar[1], sonar_token), server_log) as session:
        project = await error(session, "get_project_quality", project_key="acme:nope")
        findings = await error(session, "find_security_issues", project_key="acme:nope")
        issue = await error(session, "suggest_fixes", issue_id="AZ-does-not-exist")
    assert "has no project 'acme:nope' (404): Component key 'acme:nope' not found" in project
    assert "list_projects" in project
    assert "Project 'acme:nope' not found" in findings
    assert "no issue or hotspot 'AZ-does-not-exist'" in issue
    assert "find_security_issues" in issue


async def test_a_wrong_token_is_refused_and_never_logged(
        sonar: Sonar, server_log: ServerLog, transport: Transport) -> None:
    wrong = "squ_wrong_" + "0" * 30
    async with session_for(transport, server_env(sonar[1], wrong), server_log) as session:
        message = await error(session, "list_projects")
    assert "rejected the token (401 Unauthorized)" in message
    assert sonar[0].state.requests and not sonar[0].state.requests[0]["authorized"]
    log = server_log.text()
    assert "list_projects" in log  # the debug log did see the call ...
    assert wrong not in log and wrong not in message  # ... but never the token


async def test_sonarqube_down_is_a_tool_error(sonar_token: str, server_log: ServerLog) -> None:
    from tests.support.servers import free_port

    env = server_env(f"http://127.0.0.1:{free_port()}", sonar_token)
    async with session_for("stdio", env, server_log) as session:
        message = await error(session, "list_projects")
    assert "Cannot reach SonarQube at http://127.0.0.1:" in message
    assert "SONAR_HOST_URL" in message
