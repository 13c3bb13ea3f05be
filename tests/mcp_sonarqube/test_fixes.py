"""suggest_fixes end to end: SonarQube stand-in -> MCP server (stdio subprocess) -> a running
Meterline (demo keys, mock upstream). The answer is charged to engineering, the second identical
ask is a cache hit, and neither the SonarQube token nor the Meterline key reaches the log."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from proxy.mcp_sonarqube.fixes import TASK, split_answer
from tests.mcp_sonarqube.conftest import ServerLog, server_env, stdio_session
from tests.mcp_sonarqube.test_server import Sonar, error, ok
from tests.support.servers import ServerThread, free_port, mock_requests
from tests.support.sonarqube_standin import CONFIG_FILE, DB_FILE, SQL_ISSUE

ENGINEERING_KEY = "sk-demo-engineering"


def engineering_fix_records(proxy: ServerThread, expected: int) -> list[dict[str, Any]]:
    """This tool's spend records for engineering, waiting for them to be written."""
    deadline = time.monotonic() + 10
    while True:
        spend = httpx.get(f"{proxy.url}/admin/spend", params={"department": "engineering"},
                          headers={"Authorization": "Bearer sk-demo-admin"}).json()
        records = [r for r in spend["recent"] if r["task"] == TASK]
        if len(records) >= expected or time.monotonic() > deadline:
            return sorted(records, key=lambda r: r["ts"])
        time.sleep(0.1)


async def test_fix_is_asked_through_meterline_charged_to_engineering_and_cached(
        sonar: Sonar, sonar_token: str, proxy: ServerThread, mock_upstream: ServerThread,
        server_log: ServerLog) -> None:
    env = server_env(sonar[1], sonar_token, MET_MCP_PROXY_URL=proxy.url,
                     MET_MCP_API_KEY=ENGINEERING_KEY)
    async with stdio_session(env, server_log) as session:
        first = await ok(session, "suggest_fixes", issue_id=SQL_ISSUE)
        second = await ok(session, "suggest_fixes", issue_id=SQL_ISSUE)

    assert (first["rule"], first["file"], first["line"]) == ("javasecurity:S3649", DB_FILE, 12)
    assert first["rule_name"].startswith("Database queries should not be vulnerable")
    flagged = [line for line in first["code"].splitlines() if line.startswith(">")]
    assert flagged == ['>   12 |     return statement.executeQuery("SELECT * FROM users WHERE '
                       "name = '\" + name + \"'\");"]
    assert "<span" not in first["code"] and "&quot;" not in first["code"]
    assert first["explanation"] and second["explanation"] == first["explanation"]
    assert first["cache"] == "miss" and first["cost_usd"] > 0
    assert second["cache"] == "hit-exact" and second["cost_usd"] == 0

    asked = [r for r in mock_requests(mock_upstream.url)
             if "javasecurity:S3649" in str(r["body"]["messages"])]
    assert len(asked) == 1  # the second answer came from the cache
    prompt = asked[0]["body"]["messages"][-1]["content"]
    assert "PreparedStatement" in prompt and "& never concatenate" in prompt
    assert "executeQuery" in prompt and asked[0]["body"]["temperature"] == 0

    records = engineering_fix_records(proxy, 2)
    assert [(r["department"], r["key_id"], r["cache"]) for r in records] == [
        ("engineering", "demo-engineering", "miss"), ("engineering", "demo-engineering",
                                                      "hit-exact")]
    assert records[0]["cost"] == pytest.approx(first["cost_usd"], abs=1e-6)
    assert records[1]["cost"] == 0 and records[1]["saved"] > 0
    assert records[0]["route_rule"] != "code-review"  # that rule's answers are never cached

    log = server_log.text()
    assert "suggest_fixes" in log
    assert sonar_token not in log and ENGINEERING_KEY not in log


async def test_fix_for_a_hotspot_uses_its_risk_description_and_code(
        sonar: Sonar, sonar_token: str, proxy: ServerThread, mock_upstream: ServerThread,
        server_log: ServerLog) -> None:
    env = server_env(sonar[1], sonar_token, MET_MCP_PROXY_URL=proxy.url,
                     MET_MCP_API_KEY=ENGINEERING_KEY)
    async with stdio_session(env, server_log) as session:
        fix = await ok(session, "suggest_fixes", issue_id="AZ3h-password-0001")
    assert (fix["rule"], fix["rule_name"]) == ("java:S2068", "Credentials should not be hard-coded")
    assert (fix["file"], fix["line"]) == (CONFIG_FILE, 4)
    assert '>    4 |   static final String PASSWORD = "hunter2-prod";' in fix["code"]
    assert fix["cache"] == "miss" and fix["cost_usd"] > 0
    prompt = [r for r in mock_requests(mock_upstream.url)
              if "java:S2068" in str(r["body"]["messages"])][-1]["body"]["messages"][-1]["content"]
    assert "read them from the environment" in prompt and "hunter2-prod" in prompt
    assert [s["path"] for s in sonar[0].state.requests] == [
        "api/issues/search", "api/hotspots/show", "api/sources/lines"]


@pytest.mark.parametrize("extra,expect", [
    ({}, ["needs MET_MCP_API_KEY", "engineering key"]),
    ({"MET_MCP_API_KEY": "sk-not-a-key"}, ["Meterline rejected MET_MCP_API_KEY (401)"]),
    ({"MET_MCP_API_KEY": ENGINEERING_KEY, "MET_MCP_PROXY_URL": "http://127.0.0.1:{free}"},
     ["Cannot reach Meterline at http://127.0.0.1:", "MET_MCP_PROXY_URL"]),
    ({"MET_MCP_API_KEY": ENGINEERING_KEY, "MET_MCP_MODEL": "no-such-model"},
     ["The LLM call through Meterline failed (404)", "no-such-model"]),
])
async def test_meterline_failures_are_clear_tool_errors(
        sonar: Sonar, sonar_token: str, proxy: ServerThread, server_log: ServerLog,
        extra: dict[str, str], expect: list[str]) -> None:
    settings = {"MET_MCP_PROXY_URL": proxy.url} | {
        k: v.format(free=free_port()) for k, v in extra.items()}
    async with stdio_session(server_env(sonar[1], sonar_token, **settings), server_log
                             ) as session:
        message = await error(session, "suggest_fixes", issue_id=SQL_ISSUE)
    for part in expect:
        assert part in message
    assert "sk-not-a-key" not in message + server_log.text()


def test_answer_is_split_into_explanation_and_patch() -> None:
    answer = ("The query concatenates user input.\n\n```diff\n--- a/Db.java\n+++ b/Db.java\n"
              "@@ -11,2 +11,3 @@\n-    Statement s = c.createStatement();\n"
              "+    PreparedStatement s = c.prepareStatement(SQL);\n```\nBind the name.")
    explanation, patch = split_answer(answer)
    assert explanation == "The query concatenates user input.\n\n\nBind the name."
    assert patch is not None and patch.startswith("--- a/Db.java\n") and patch.endswith(
        "prepareStatement(SQL);\n")
    assert split_answer("No change needed.") == ("No change needed.", None)
