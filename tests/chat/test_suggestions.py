"""Suggested actions: the rules (parametrized) and POST /api/v1/chat/suggestions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.chat.suggestions import SUMMARY_PROMPT, Context, SuggestionRequest, suggest_actions
from tests.conftest import ProxyStarter

SALES = Context("sales", False, None)
ADMIN = Context(None, True, None)
GRAFANA = Context("sales", False, "http://grafana.local:3000/")


def kinds(actions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["action"], a["label"]) for a in actions]


@pytest.mark.parametrize(("question", "answer", "messages", "ctx", "expected"), [
    ("How much did we spend on GPT-4o?", "It depends.", 2, SALES, [
        ("analyze", "Show my department's spend this week"),
        ("navigate", "Open the Spend page for sales")]),
    ("How much did we spend?", "It depends.", 2, ADMIN, [
        ("analyze", "Show spend by department this week"), ("navigate", "Open the Spend page")]),
    ("I need the chargeback export for finance", "Sure.", 2, SALES, [
        ("report", "Generate chargeback report"), ("ask", "Give me a concrete example")]),
    ("Show the latency trend", "Latency is fine.", 2, GRAFANA, [
        ("navigate", "View Dashboard"), ("ask", "Give me a concrete example")]),
    ("Show the latency trend", "Latency is fine.", 2, SALES, [  # no Grafana configured
        ("ask", "Give me a concrete example"), ("ask", "What are the trade-offs?")]),
    ("Explain caching", "x" * 900, 2, SALES, [
        ("report", "Summarize this conversation"), ("ask", "Give me a concrete example")]),
    ("Explain caching", "## Exact hits\nSame text.\n```py\nx = 1\n```", 2, SALES, [
        ("ask", "Tell me more about “Exact hits”"), ("ask", "Explain the code step by step")]),
    ("What budget and cost report is on the dashboard?", "Long " * 200, 6, GRAFANA, [
        ("analyze", "Show my department's spend this week"),
        ("navigate", "Open the Spend page for sales"),
        ("report", "Generate chargeback report"), ("navigate", "View Dashboard")]),
])
def test_rules(question: str, answer: str, messages: int, ctx: Context,
               expected: list[tuple[str, str]]) -> None:
    actions = suggest_actions(SuggestionRequest(question=question, answer=answer,
                                                messages=messages), ctx)
    assert kinds(actions) == expected
    for action in actions:
        assert set(action) == {"label", "action", "target"} if action["action"] == "navigate" \
            else set(action) == {"label", "action", "params"}


def test_targets_and_params() -> None:
    spend = suggest_actions(SuggestionRequest(answer="budget dashboard report", messages=5),
                            GRAFANA)
    by_label = {a["label"]: a for a in spend}
    assert by_label["Open the Spend page for sales"]["target"] == "/spend?department=sales"
    assert by_label["View Dashboard"]["target"] == (
        "http://grafana.local:3000/d/meterline-departments?var-department=sales")
    assert by_label["Show my department's spend this week"]["params"] == {
        "endpoint": "/v1/spend/daily", "query": {"days": 7}}
    assert by_label["Generate chargeback report"]["params"] == {
        "kind": "chargeback", "endpoint": "/v1/chargeback", "query": {"format": "csv"}}
    admin = suggest_actions(SuggestionRequest(answer="chargeback"), ADMIN)
    assert admin[0]["params"]["endpoint"] == "/admin/chargeback"
    summary = suggest_actions(SuggestionRequest(answer="hi", messages=4), SALES)[0]
    assert summary["params"] == {"kind": "summary", "prompt": SUMMARY_PROMPT}


def test_endpoint_uses_the_callers_department(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(extra_env={"MET_GRAFANA_URL": "http://grafana.test"})
    url = proxy.url + "/api/v1/chat/suggestions"
    resp = httpx.post(url, json={"question": "what is my budget?", "answer": "See the dashboard"},
                      headers={"authorization": "Bearer sk-demo-marketing"})
    assert resp.status_code == 200, resp.text
    targets = [a.get("target") for a in resp.json()["actions"]]
    assert targets == [None, "/spend?department=marketing",
                       "http://grafana.test/d/meterline-departments?var-department=marketing"]
    bad = httpx.post(url, json={"answer": 5}, headers={"authorization": "Bearer sk-demo-sales"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "answer"
    assert httpx.post(url, json={"answer": "x"}).status_code == 401
