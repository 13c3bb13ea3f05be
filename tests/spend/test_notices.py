"""Budget notices sent once per key (proxy/spend/notices.py): the local memo, the backend claim,
and what a failed delivery or an unreachable backend does."""

from __future__ import annotations

from typing import cast

import pytest

from proxy.spend.budgets import BackendDown, SpendBackend
from proxy.spend.notices import MEMO_LIMIT, Notices
from proxy.spend.notify import BudgetNotice, NotifyError

NOTICE = BudgetNotice("exhausted", "eng", "daily", 10.0, 10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Claims:
    """The two backend calls Notices makes, shared like Redis between replicas."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.down = False

    async def claim_notice(self, key: str, ttl_seconds: int) -> bool:
        self.calls.append(("claim", key, ttl_seconds))
        if self.down:
            raise BackendDown("connection refused")
        if key in self.held:
            return False
        self.held[key] = ttl_seconds
        return True

    async def release_notice(self, key: str) -> None:
        self.calls.append(("release", key, 0))
        if self.down:
            raise BackendDown("connection refused")
        self.held.pop(key, None)


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[BudgetNotice] = []
        self.fail = fail

    async def send(self, notice: BudgetNotice) -> None:
        if self.fail:
            raise NotifyError("webhook answered 500")
        self.sent.append(notice)


def notices(claims: Claims, sink: Sink | None, clock: Clock) -> Notices:
    return Notices(cast(SpendBackend, claims), sink, clock)


async def test_a_notice_is_sent_once_per_key() -> None:
    claims, sink, clock = Claims(), Sink(), Clock()
    sender = notices(claims, sink, clock)
    for _ in range(3):
        sender.emit(NOTICE, "eng:daily:d1", 60.2)
    other = BudgetNotice("soft_threshold", "eng", "daily", 8.0, 10.0, threshold=0.8)
    sender.emit(other, "eng:daily:d1:soft", 60)
    await sender.drain()
    assert sink.sent == [NOTICE, other]
    # the repeats never reached the backend; the claim lasts the whole TTL, rounded up
    assert claims.calls == [("claim", "eng:daily:d1", 61), ("claim", "eng:daily:d1:soft", 60)]


async def test_another_replicas_claim_wins() -> None:
    claims, sink = Claims(), Sink()
    claims.held["eng:daily:d1"] = 60
    sender = notices(claims, sink, Clock())
    sender.emit(NOTICE, "eng:daily:d1", 60)
    await sender.drain()
    assert sink.sent == []


async def test_after_the_memo_expires_the_backend_is_asked_again() -> None:
    claims, sink, clock = Claims(), Sink(), Clock()
    sender = notices(claims, sink, clock)
    sender.emit(NOTICE, "k", 10)
    await sender.drain()
    clock.now += 10
    sender.emit(NOTICE, "k", 10)
    await sender.drain()
    assert [c[0] for c in claims.calls] == ["claim", "claim"]
    assert len(sink.sent) == 1  # the backend still holds the claim


async def test_without_a_sink_nothing_happens() -> None:
    claims = Claims()
    sender = notices(claims, None, Clock())
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    assert claims.calls == []


async def test_a_failed_delivery_frees_the_key_for_a_retry(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    claims, sink = Claims(), Sink(fail=True)
    sender = notices(claims, sink, Clock())
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    assert "budget notice k not delivered: webhook answered 500" in caplog.text
    assert claims.held == {}
    sink.fail = False
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    assert sink.sent == [NOTICE]


async def test_with_the_backend_down_the_notice_is_still_sent_once_per_process() -> None:
    claims, sink = Claims(), Sink()
    claims.down = True
    sender = notices(claims, sink, Clock())
    sender.emit(NOTICE, "k", 60)
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    assert sink.sent == [NOTICE]


async def test_a_failed_delivery_with_the_backend_down_does_not_raise() -> None:
    claims, sink = Claims(), Sink(fail=True)
    claims.down = True
    sender = notices(claims, sink, Clock())
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    assert [c[0] for c in claims.calls] == ["claim", "release"]


async def test_the_memo_drops_expired_keys_when_it_grows() -> None:
    claims, sink, clock = Claims(), Sink(), Clock()
    sender = notices(claims, sink, clock)
    for i in range(MEMO_LIMIT + 1):
        sender.emit(NOTICE, f"old{i}", 5)
    await sender.drain()
    clock.now += 5
    sender.emit(NOTICE, "fresh", 60)
    await sender.drain()
    assert list(sender._claimed_here) == ["fresh"]


async def test_forget_locally_lets_the_next_emit_ask_the_backend() -> None:
    claims, sink = Claims(), Sink()
    sender = notices(claims, sink, Clock())
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    sender.forget_locally("k")
    sender.forget_locally("never-seen")
    sender.emit(NOTICE, "k", 60)
    await sender.drain()
    assert [c[0] for c in claims.calls] == ["claim", "claim"]
