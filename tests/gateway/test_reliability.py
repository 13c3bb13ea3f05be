from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from proxy.gateway.reliability import (
    AllTargetsFailed,
    Cooldowns,
    RetryPolicy,
    Success,
    UpstreamFailure,
    parse_retry_after,
    run_with_fallbacks,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """An attempt callable that replays per-target outcomes: an exception or a value."""

    def __init__(self, plan: dict[str, list[UpstreamFailure | str]]) -> None:
        self.plan = {k: list(v) for k, v in plan.items()}
        self.calls: list[str] = []

    async def __call__(self, target: str) -> str:
        self.calls.append(target)
        outcome = self.plan[target].pop(0)
        if isinstance(outcome, UpstreamFailure):
            raise outcome
        return outcome


def recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return waits, sleep


def run(targets: list[str], script: Script, policy: RetryPolicy | None = None,
        cooldowns: Cooldowns | None = None, rng: float = 1.0) -> tuple[Success[str], list[float]]:
    waits, sleep = recorder()
    result = asyncio.run(run_with_fallbacks(
        targets, script, policy or RetryPolicy(), cooldowns or Cooldowns(clock=Clock()),
        sleep=sleep, rng=lambda: rng))
    return result, waits


def fail(status: int | None, retry_after: float | None = None) -> UpstreamFailure:
    return UpstreamFailure(f"upstream {status}", status=status, retry_after=retry_after)


def test_first_success_needs_no_retry() -> None:
    result, waits = run(["a", "b"], Script({"a": ["ok"]}))
    assert (result.value, result.target, waits) == ("ok", "a", [])
    assert [(a.target, a.status) for a in result.attempts] == [("a", 200)]


def test_retry_honours_retry_after() -> None:
    script = Script({"a": [fail(429, retry_after=3.0), fail(503, retry_after=0.5), "ok"]})
    result, waits = run(["a"], script)
    assert waits == [3.0, 0.5]
    assert result.target == "a"
    assert [a.status for a in result.attempts] == [429, 503, 200]


def test_retry_after_above_cap_falls_back_without_waiting() -> None:
    script = Script({"a": [fail(429, retry_after=120.0)], "b": ["from b"]})
    result, waits = run(["a", "b"], script, RetryPolicy(retry_after_max=10))
    assert (result.value, waits, script.calls) == ("from b", [], ["a", "b"])


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_backoff_is_exponential_jittered_and_bounded(jitter: float) -> None:
    policy = RetryPolicy(max_retries=5, backoff_base=0.5, backoff_multiplier=2, backoff_max=3)
    script = Script({"a": [fail(500)] * 5 + ["ok"]})
    _, waits = run(["a"], script, policy, Cooldowns(failures_to_open=99, clock=Clock()), jitter)
    assert waits == pytest.approx([c * jitter for c in (0.5, 1.0, 2.0, 3.0, 3.0)])


def test_fallback_order_after_retries_exhausted() -> None:
    script = Script({"a": [fail(500)] * 3, "b": [fail(None)] * 3, "c": ["from c"]})
    result, waits = run(["a", "b", "c"], script, RetryPolicy(max_retries=2),
                        Cooldowns(failures_to_open=99, clock=Clock()))
    assert script.calls == ["a", "a", "a", "b", "b", "b", "c"]
    assert result.target == "c" and len(waits) == 4


def test_client_errors_are_raised_without_retry_or_fallback() -> None:
    script = Script({"a": [fail(400)], "b": ["never"]})
    with pytest.raises(UpstreamFailure) as err:
        run(["a", "b"], script)
    assert err.value.status == 400 and script.calls == ["a"]


def test_everything_failing_raises_with_attempt_log() -> None:
    script = Script({"a": [fail(502)], "b": [fail(503)]})
    with pytest.raises(AllTargetsFailed) as err:
        run(["a", "b"], script, RetryPolicy(max_retries=0))
    assert [(a.target, a.status) for a in err.value.attempts] == [("a", 502), ("b", 503)]
    assert err.value.last is not None and err.value.last.status == 503
    assert "all targets failed (attempts: a:502, b:503)" == str(err.value)


def test_timeout_per_target_falls_back() -> None:
    async def attempt(target: str) -> str:
        if target == "slow":
            await asyncio.sleep(5)
        return target

    policy = RetryPolicy(timeout=5, timeouts={"slow": 0.01})
    result = asyncio.run(run_with_fallbacks(["slow", "fast"], attempt, policy,
                                            Cooldowns(clock=Clock())))
    assert result.value == "fast"
    assert (result.attempts[0].target, result.attempts[0].error) == ("slow", "timeout")


def test_cooldown_opens_after_n_failures_and_closes_after_cooldown() -> None:
    clock = Clock()
    breaker = Cooldowns(failures_to_open=3, cooldown=30, clock=clock)
    for _ in range(2):
        breaker.record_failure("a")
    assert breaker.state("a") == "closed"
    breaker.record_failure("a")
    assert breaker.state("a") == "open" and not breaker.available("a")
    clock.now += 29.9
    assert breaker.state("a") == "open"
    clock.now += 0.1
    assert breaker.state("a") == "half-open" and breaker.available("a")
    breaker.record_failure("a")  # the trial request failed: open again, for a full cooldown
    assert breaker.state("a") == "open"
    clock.now += 30
    breaker.record_success("a")
    assert breaker.state("a") == "closed"
    breaker.record_failure("a")
    assert breaker.state("a") == "closed"  # counting starts over after a success


def test_open_target_is_skipped_and_all_open_raises() -> None:
    clock = Clock()
    breaker = Cooldowns(failures_to_open=2, cooldown=10, clock=clock)
    script = Script({"a": [fail(500), fail(500), fail(500)], "b": ["b1", "b2"]})
    first, _ = run(["a", "b"], script, RetryPolicy(max_retries=1), breaker)
    assert first.value == "b1" and script.calls == ["a", "a", "b"]
    assert breaker.state("a") == "closed"  # one request's retries count as one failure
    second, _ = run(["a", "b"], script, RetryPolicy(max_retries=0), breaker)
    assert second.value == "b2" and script.calls[-2:] == ["a", "b"]
    assert breaker.state("a") == "open"  # the second request in a row that failed on "a"
    with pytest.raises(AllTargetsFailed, match="cooling down"):
        run(["a"], script, cooldowns=breaker)
    clock.now += 10
    script.plan["a"] = ["a back"]
    assert run(["a", "b"], script, cooldowns=breaker)[0].value == "a back"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(header, now) == expected
