"""Budget notices reach a (local stand-in) Slack webhook once per department + window + kind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.spend.budgets import BudgetExhausted, CircuitOpen
from proxy.spend.notify import BudgetNotice, NotifyError, SlackNotifier, format_notice
from tests.spend_helpers import FakeClock, StoreFactory, usd
from tests.support.slack_standin import SlackStandin


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


DEPT = {"budgets": {"daily": 1}, "soft_alerts": [0.5, 0.8]}


def test_each_threshold_and_exhaustion_is_sent_once(
    make_spend_store: StoreFactory, slack: SlackStandin
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": DEPT}, notifier=SlackNotifier(slack.url))
        for dollars in (0.3, 0.3, 0.1, 0.15, 0.05, 0.2):  # 0.6 crosses 50 %, 0.85 crosses 80 %
            await store.settle(await store.reserve("eng", "gpt-4o-mini", 1, 1), usd(dollars))
        for _ in range(3):
            with pytest.raises(BudgetExhausted):
                await store.reserve("eng", "gpt-4o-mini", 1, 1)
        await store.drain_notices()
        await store.close()

    asyncio.run(run())
    assert sorted(slack.texts) == sorted(
        [  # background deliveries may arrive in any order
            ":warning: *eng* has used 50% of its daily budget: $0.60 of $1.00.",
            ":warning: *eng* has used 80% of its daily budget: $0.85 of $1.00.",
            ":no_entry: *eng* has exhausted its daily budget: $1.10 of $1.00. "
            "Requests get 429 insufficient_quota until the window resets.",
        ]
    )
    assert all(post["blocks"][0]["text"]["text"] == post["text"] for post in slack.messages)


@pytest.mark.redis
@pytest.mark.parametrize("spend_backend", ["redis"])
def test_a_second_replica_does_not_repeat_a_notice(
    make_spend_store: StoreFactory, slack: SlackStandin
) -> None:
    async def run() -> None:
        clock = FakeClock()
        first = make_spend_store({"eng": DEPT}, clock=clock, notifier=SlackNotifier(slack.url))
        second = make_spend_store({"eng": DEPT}, clock=clock, notifier=SlackNotifier(slack.url))
        await first.settle(await first.reserve("eng", "gpt-4o-mini", 1, 1), usd(1.0))
        await first.drain_notices()
        await first.flush()  # other replicas see a replica's spend after its flush window
        for _ in range(2):  # another replica refusing over-budget requests stays quiet
            with pytest.raises(BudgetExhausted):
                await second.reserve("eng", "gpt-4o-mini", 1, 1)
        await second.drain_notices()
        await first.close()
        await second.close()

    asyncio.run(run())
    assert [t.split(" ", 1)[0] for t in slack.texts] == [":no_entry:"]


def test_breaker_trip_is_announced_once_and_again_after_resume(
    make_spend_store: StoreFactory, slack: SlackStandin
) -> None:
    breaker = {"circuit_breaker": {"window_minutes": 5, "max_dollars": 1}}

    async def trip(store: Any) -> None:
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 1, 1), usd(1.5))
        with pytest.raises(CircuitOpen):
            await store.reserve("eng", "gpt-4o-mini", 1, 1)

    async def run() -> None:
        store = make_spend_store({"eng": breaker}, notifier=SlackNotifier(slack.url))
        await trip(store)
        await store.drain_notices()
        await store.resume("eng")
        await trip(store)
        await store.drain_notices()
        await store.close()

    asyncio.run(run())
    assert len(slack.texts) == 2
    assert slack.texts[0] == (
        ":rotating_light: Circuit breaker tripped for *eng*: $1.50 spent in the last 5 minutes "
        "(ceiling $1.00). Requests are paused until spend drops or an admin resumes the department."
    )


def test_failed_delivery_frees_the_dedupe_key_for_a_retry(
    make_spend_store: StoreFactory, slack: SlackStandin
) -> None:
    async def run() -> None:
        store = make_spend_store({"eng": DEPT}, notifier=SlackNotifier(slack.url))
        slack.status = 500
        await store.settle(await store.reserve("eng", "gpt-4o-mini", 1, 1), usd(1.2))
        await store.drain_notices()
        slack.status = 200
        with pytest.raises(BudgetExhausted):  # the next refusal announces it again
            await store.reserve("eng", "gpt-4o-mini", 1, 1)
        await store.drain_notices()
        await store.close()

    asyncio.run(run())
    assert [t.split(" ", 1)[0] for t in slack.texts] == [":no_entry:", ":no_entry:"]


def test_unreachable_webhook_raises_notify_error() -> None:
    notice = BudgetNotice("exhausted", "eng", "daily", 1.0, 1.0)

    async def run() -> None:
        with pytest.raises(NotifyError):
            await SlackNotifier("http://127.0.0.1:9/hook", timeout_seconds=1).send(notice)

    asyncio.run(run())
    assert "*eng*" in format_notice(notice)
