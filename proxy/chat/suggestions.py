"""Suggested actions after a chat answer, chosen by plain rules over the question, the answer and
the caller's context (no model call). Each is `{"label", "action", "target" | "params"}`:

- navigate  `target`: the Spend page filtered to the caller's department; the Grafana dashboard
            (departments, or overview for an admin key) when MET_GRAFANA_URL is set
- analyze   `params.endpoint` + `params.query`: the page GETs it and shows a table in the chat
- report    `params.kind` = "chargeback" (the page downloads `endpoint` as CSV) or "summary"
            (the page sends `params.prompt` as a chat message: a model call charged as usual)
- ask       `params.prompt`: a follow-up question, when nothing better fits

Rules, in order: money words → analyze this week's spend + open the Spend page; report words →
chargeback CSV; dashboard words → the dashboard; a long conversation (4+ messages) or answer
(800+ characters) → summary; then follow-up questions until there are 2. At most 4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

MIN_ACTIONS, MAX_ACTIONS = 2, 4
LONG_ANSWER_CHARS = 800
LONG_CONVERSATION = 4
SPEND_WORDS = frozenset(("spend", "spent", "spending", "cost", "costs", "budget", "budgets",
                         "money", "price", "prices", "pricing", "bill", "billing", "dollars",
                         "expensive", "cheap", "cheaper", "savings", "charge", "charged"))
REPORT_WORDS = frozenset(("report", "reports", "chargeback", "invoice", "invoices", "export",
                          "csv", "finance", "accounting"))
DASHBOARD_WORDS = frozenset(("dashboard", "dashboards", "metrics", "latency", "trend", "trends",
                             "monitor", "monitoring", "grafana", "chart", "charts", "graph"))
SUMMARY_PROMPT = ("Summarize this conversation so far in a few bullet points: the question, the "
                  "answer's key points and any open items.")
_WORD = re.compile(r"[a-z]+")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)


class SuggestionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(default="", max_length=200_000)
    answer: str = Field(max_length=200_000)
    messages: int = Field(default=2, ge=0, le=10_000)


@dataclass(frozen=True)
class Context:
    """Who asks: their department (None for an admin key) and where Grafana is, if anywhere."""

    department: str | None
    admin: bool
    grafana_url: str | None


def navigate(label: str, target: str) -> dict[str, Any]:
    return {"label": label, "action": "navigate", "target": target}


def spend_actions(ctx: Context) -> list[dict[str, Any]]:
    scope = ctx.department
    analyze = {"label": "Show my department's spend this week" if scope
               else "Show spend by department this week", "action": "analyze",
               "params": {"endpoint": "/v1/spend/daily", "query": {"days": 7}}}
    page = "/spend" + (f"?department={quote(scope)}" if scope else "")
    return [analyze, navigate(f"Open the Spend page for {scope}" if scope
                              else "Open the Spend page", page)]


def chargeback_action(ctx: Context) -> dict[str, Any]:
    endpoint = "/admin/chargeback" if ctx.admin else "/v1/chargeback"
    return {"label": "Generate chargeback report", "action": "report",
            "params": {"kind": "chargeback", "endpoint": endpoint, "query": {"format": "csv"}}}


def dashboard_action(ctx: Context) -> dict[str, Any] | None:
    if not ctx.grafana_url:
        return None
    base = ctx.grafana_url.rstrip("/")
    if ctx.department:
        return navigate("View Dashboard",
                        f"{base}/d/meterline-departments?var-department={quote(ctx.department)}")
    return navigate("View Dashboard", f"{base}/d/meterline-overview")


def follow_ups(answer: str) -> list[dict[str, Any]]:
    prompts = []
    heading = _HEADING.search(answer)
    if heading:
        prompts.append(f"Tell me more about “{heading.group(1)[:60]}”")
    if "```" in answer:
        prompts.append("Explain the code step by step")
    prompts += ["Give me a concrete example", "What are the trade-offs?"]
    return [{"label": p, "action": "ask", "params": {"prompt": p}} for p in prompts]


def suggest_actions(req: SuggestionRequest, ctx: Context) -> list[dict[str, Any]]:
    words = set(_WORD.findall(f"{req.question}\n{req.answer}".lower()))
    actions: list[dict[str, Any]] = []
    if words & SPEND_WORDS:
        actions += spend_actions(ctx)
    if words & REPORT_WORDS:
        actions.append(chargeback_action(ctx))
    dashboard = dashboard_action(ctx) if words & DASHBOARD_WORDS else None
    if dashboard is not None:
        actions.append(dashboard)
    if req.messages >= LONG_CONVERSATION or len(req.answer) >= LONG_ANSWER_CHARS:
        actions.append({"label": "Summarize this conversation", "action": "report",
                        "params": {"kind": "summary", "prompt": SUMMARY_PROMPT}})
    for extra in follow_ups(req.answer):
        if len(actions) >= MIN_ACTIONS:
            break
        actions.append(extra)
    return actions[:MAX_ACTIONS]
