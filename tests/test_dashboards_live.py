"""Every panel query of every dashboard returns data from a real Prometheus scraping a proxy that
served real traffic (issue 18 item 9: four plotted series were never recorded, so their panels
said "No data" forever while tests/test_rules_dashboards.py only checked that they are defined).

The traffic covers what the dashboards show: cache misses and hits, a routing rule to a cheaper
model, a fallback after a failing target, an experiment with quality feedback, a stream, a
department that crosses its soft budget alert (a Slack notice) and is then refused, and tool
calls (one failing) to the SonarQube MCP server, which serves its own /metrics and is scraped
too. It runs twice with scrapes in between, as on a live system: a counter's first sample has
no increase before it, so rates and quantiles need traffic after the series exist.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import ProxyStarter
from tests.mcp_sonarqube.conftest import ServerLog, server_env, start_http_server
from tests.support.promstack import Prometheus, http_json, start_prometheus
from tests.support.servers import REPO_ROOT, ServerThread, fault
from tests.support.slack_standin import SlackStandin
from tests.support.sonarqube_standin import PAYMENTS, SonarQubeStandin

DASHBOARDS = sorted((REPO_ROOT / "dashboards").glob("*.json"))
# Grafana's built-ins: the range covers the whole test; a rate window holds >= 2 scrapes (1 s).
GRAFANA_VARS = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "10m"}
ENG = {"authorization": "Bearer sk-demo-engineering"}
SALES = {"authorization": "Bearer sk-demo-sales"}
EXECUTIVE = {"authorization": "Bearer sk-demo-executive"}
ADMIN = {"authorization": "Bearer sk-demo-admin"}
# A variable without "All" is set to where the traffic went (it must be one of its values).
CHOSEN = {"experiment": "summary_model"}


def panel_targets() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(dashboard, panel title, expr, the board's variables) for every panel query."""
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    yield path.stem, inner.get("title", ""), target["expr"], variables


def variable_value(prometheus: Prometheus, variable: dict[str, Any]) -> str:
    """All (its allValue) where offered, as Grafana selects by default; else the value in
    CHOSEN, which `label_values(metric, label)` must offer."""
    if variable.get("includeAll"):
        return str(variable.get("allValue") or ".*")
    found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"])
    assert found, f"unsupported variable query {variable['query']!r}"
    metric, label = found.groups()
    url = (f"{prometheus.url}/api/v1/label/{label}/values?"
           + urllib.parse.urlencode({"match[]": metric}))
    values: list[str] = http_json(url)["data"]
    assert CHOSEN[variable["name"]] in values, (variable["query"], values)
    return CHOSEN[variable["name"]]


def resolved(expr: str, variables: dict[str, Any], prometheus: Prometheus) -> str:
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    for name, variable in variables.items():
        if variable.get("type") == "query" and f"${name}" in expr:
            expr = expr.replace(f"${name}", variable_value(prometheus, variable))
    return expr


def has_data(result: list[dict[str, Any]]) -> bool:
    """Grafana shows "No data" for an empty result; NaN everywhere (0/0, a quantile of nothing)
    plots nothing either."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def chat(proxy: ServerThread, headers: dict[str, str], text: str, *, model: str = "gpt-4o",
         expect: int = 200, **body: Any) -> httpx.Response:
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=headers, timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": text}], **body})
    assert r.status_code == expect, r.text
    return r


def send_traffic(proxy: ServerThread, mock: ServerThread, round_: int) -> None:
    question = "What does the dashboard test ask twice?"
    for _ in range(3):  # a miss (first round), then hits
        chat(proxy, ENG, question)
    r = chat(proxy, SALES, f"Short question for the cheap model {round_}", model="gpt-4.1-mini")
    assert r.headers["x-meterline-route"] == "short-sales-marketing"  # to gpt-4o-mini
    fault(mock.url, "500", times=3)  # code-review: gpt-4.1 fails (1 + 2 retries), gpt-4o answers
    r = chat(proxy, ENG, f"Please refactor this loop {uuid.uuid4().hex[:6]}")
    assert r.headers["x-meterline-route"] == "code-review"
    for user in range(8):  # summary_model experiment: both arms
        r = chat(proxy, {**ENG, "x-meterline-task": "summary"},
                 f"Summarise the meeting {round_}-{user}", model="gpt-4o-mini",
                 user=f"user-{user}")
        assert r.headers.get("x-meterline-experiment") == "summary_model"
        feedback = httpx.post(proxy.url + "/v1/feedback", headers=ENG, json={
            "request_id": r.headers["x-request-id"], "score": 0.8})
        assert feedback.status_code == 200, feedback.text
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", headers=ENG, timeout=30,
                      json={"model": "gpt-4o-mini", "stream": True, "messages": [
                          {"role": "user", "content": f"Stream it {uuid.uuid4().hex[:6]}"}]}) as s:
        assert s.status_code == 200 and s.read().endswith(b"data: [DONE]\n\n")
    statuses = [spend_a_little(proxy, n) for n in range(6)]  # executive: $0.002 a day
    assert statuses[-1] == 429 and (round_ > 0 or statuses[0] == 200), statuses
    assert httpx.get(proxy.url + "/v1/cache/analytics", headers=ADMIN).status_code == 200


async def call_mcp_tools(base: str) -> None:
    async with streamable_http_client(f"{base}/mcp") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            found = await session.call_tool("get_project_quality", {"project_key": PAYMENTS})
            assert not found.is_error, found
            missing = await session.call_tool("get_project_quality",
                                              {"project_key": "acme:nope"})
            assert missing.is_error, missing


@contextmanager
def mcp_server(tmp_path: Path) -> Iterator[str]:
    """The SonarQube MCP server on streamable HTTP (its /metrics beside /mcp), against the
    SonarQube stand-in."""
    token = "squ_" + uuid.uuid4().hex
    sonar = ServerThread(SonarQubeStandin(token).app).start()
    process: subprocess.Popen[bytes] | None = None
    try:
        process, base = start_http_server(server_env(sonar.url, token),
                                          ServerLog(tmp_path / "mcp.log"))
        yield base
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        sonar.stop()


def spend_a_little(proxy: ServerThread, n: int) -> int:
    """One gpt-4o call of at most 100 tokens (~$0.0004) for executive; its status."""
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=EXECUTIVE, timeout=30, json={
        "model": "gpt-4o", "max_tokens": 100,
        "messages": [{"role": "user", "content": f"Budget me {n} {uuid.uuid4().hex[:6]}"}]})
    assert r.status_code in (200, 429), r.text
    return r.status_code


def wait_for_scrapes(prometheus: Prometheus, count: int = 3) -> None:
    """Until Prometheus has scraped every target `count` more times."""
    def scrapes() -> float:
        found = prometheus.query('min(count_over_time(up{job="meterline"}[10m]))')
        return float(found[0]["value"][1]) if found else 0.0

    target = scrapes() + count
    deadline = time.monotonic() + 30
    while scrapes() < target:
        assert time.monotonic() < deadline, "Prometheus does not scrape the proxy"
        time.sleep(0.25)


def inflight_during_a_stream(proxy: ServerThread, mock: ServerThread) -> float:
    """meterline_inflight_requests on /metrics while a slow stream is being relayed."""
    httpx.post(mock.url + "/_mock/faults", json={"delay_ms": 50}).raise_for_status()
    try:
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", headers=ENG, timeout=30,
                          json={"model": "gpt-4o-mini", "stream": True, "messages": [
                              {"role": "user", "content": "slow one #fault:slow_stream"}]}) as s:
            pieces = s.iter_raw()
            next(pieces)
            metrics = httpx.get(proxy.url + "/metrics").text
            assert b"".join(pieces).endswith(b"data: [DONE]\n\n")
    finally:
        httpx.post(mock.url + "/_mock/faults", json={"delay_ms": 300})
    found = re.search(r"^meterline_inflight_requests (\S+)$", metrics, re.MULTILINE)
    assert found, "meterline_inflight_requests is not exported"
    return float(found.group(1))


# The series issue 18 found plotted but never recorded: each must have moved, not just exist.
RECORDED_BY_THE_TRAFFIC = (
    "sum(meterline_fallbacks_total)",
    "sum(meterline_routing_saved_dollars_total)",
    "sum(meterline_experiment_duration_seconds_count)",
)


@pytest.mark.slow
def test_every_dashboard_panel_query_returns_data(start_proxy: ProxyStarter,
                                                 mock_upstream: ServerThread,
                                                 tmp_path: Path) -> None:
    departments = yaml.safe_load((REPO_ROOT / "rules" / "departments.yaml").read_text())
    departments["departments"]["executive"].update(budgets={"daily": 0.002}, soft_alerts=[0.5])
    slack_env = departments["notifications"]["slack_webhook_env"]
    with SlackStandin() as slack, mcp_server(tmp_path) as mcp_base:
        proxy = start_proxy(edits={"departments.yaml": departments},
                            extra_env={slack_env: slack.url})
        prometheus = start_prometheus(
            tmp_path / "prometheus", urllib.parse.urlsplit(proxy.url).netloc,
            more_targets=(urllib.parse.urlsplit(mcp_base).netloc,))
        try:
            wait_for_scrapes(prometheus)
            for round_ in range(2):
                send_traffic(proxy, mock_upstream, round_)
                asyncio.run(call_mcp_tools(mcp_base))
                wait_for_scrapes(prometheus)
            empty = []
            for board, title, expr, variables in panel_targets():
                query = resolved(expr, variables, prometheus)
                if not has_data(prometheus.query(query)):
                    empty.append(f"{board} / {title}: {query}")
            totals = {expr: prometheus.query(expr) for expr in RECORDED_BY_THE_TRAFFIC}
            alert = slack.wait_for(lambda m: "*executive* has used 50%" in str(m), timeout=10)
        finally:
            prometheus.stop()
    assert "daily budget" in str(alert)
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    assert {expr: float(found[0]["value"][1]) > 0 if found else False
            for expr, found in totals.items()} == dict.fromkeys(RECORDED_BY_THE_TRAFFIC, True)
    assert inflight_during_a_stream(proxy, mock_upstream) >= 1
