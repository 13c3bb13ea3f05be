"""Budget notices to Slack (the only slack_sdk importer).

Deduplication (once per department + period window + kind) is done by the spend ledger with a
SET NX key in Redis (or in memory), so this module only formats and delivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

NoticeKind = Literal["soft_threshold", "exhausted", "breaker_tripped"]


class NotifyError(Exception):
    """A notice could not be delivered (the ledger frees its dedupe key so it is retried)."""


@dataclass(frozen=True, slots=True)
class BudgetNotice:
    kind: NoticeKind
    department: str
    period: str  # hourly | daily | monthly | breaker
    spent_dollars: float
    limit_dollars: float
    threshold: float | None = None  # soft threshold that was crossed (fraction)
    window_minutes: int | None = None  # circuit breaker window


class NoticeSink(Protocol):
    async def send(self, notice: BudgetNotice) -> None: ...


def format_notice(notice: BudgetNotice) -> str:
    """One line of Slack mrkdwn naming the department and the amounts."""
    spent = f"${notice.spent_dollars:,.2f}"
    limit = f"${notice.limit_dollars:,.2f}"
    dept = f"*{notice.department}*"
    if notice.kind == "soft_threshold":
        pct = round((notice.threshold or 0) * 100)
        used = f"{pct}% of its {notice.period} budget"
        return f":warning: {dept} has used {used}: {spent} of {limit}."
    if notice.kind == "exhausted":
        return (
            f":no_entry: {dept} has exhausted its {notice.period} budget: {spent} of {limit}. "
            "Requests get 429 insufficient_quota until the window resets."
        )
    return (
        f":rotating_light: Circuit breaker tripped for {dept}: {spent} spent in the last "
        f"{notice.window_minutes} minutes (ceiling {limit}). Requests are paused until spend "
        "drops or an admin resumes the department."
    )


class SlackNotifier:
    """Posts notices to a Slack incoming webhook."""

    def __init__(self, webhook_url: str, *, timeout_seconds: int = 5) -> None:
        self._client = AsyncWebhookClient(webhook_url, timeout=timeout_seconds)

    async def send(self, notice: BudgetNotice) -> None:
        text = format_notice(notice)
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        try:
            response = await self._client.send(text=text, blocks=blocks)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NotifyError(f"Slack webhook unreachable: {exc}") from exc
        if response.status_code != 200:
            raise NotifyError(f"Slack webhook answered {response.status_code}: {response.body}")
