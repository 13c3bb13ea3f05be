"""Retries, fallbacks and cooldowns around upstream attempts. Pure asyncio; time and sleep injected.

`run_with_fallbacks` tries each target in order: per-target timeout, retries with bounded,
jittered exponential backoff on retryable failures (429, 5xx, transport errors), honouring
`Retry-After` up to a cap, then falls back to the next target. Targets whose breaker is open
are skipped.

Streaming: the `attempt` callable for a stream must return as soon as the upstream status line and
headers are in (before any body byte is relayed). Everything in here therefore finishes before the
first byte reaches the client, so no retry or fallback can happen after that; a stream that breaks
later is the relay's job (final `data: {"error": ...}` event), never retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
BreakerState = Literal["closed", "open", "half-open"]


class UpstreamFailure(Exception):
    """One failed attempt. `status` None means no HTTP response (connect error, timeout)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        fallback: bool | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.retryable = (status is None or status in RETRYABLE_STATUS) if retryable is None \
            else retryable
        self.fallback = self.retryable if fallback is None else fallback
        self.code = code


class RetryPolicy(BaseModel):
    """How hard to try one target before falling back. All times in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int = Field(default=2, ge=0, le=10)  # per target, after the first attempt
    backoff_base: float = Field(default=0.25, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    backoff_max: float = Field(default=4.0, gt=0)
    retry_after_max: float = Field(default=10.0, ge=0)  # longer Retry-After: go to next target
    # Deadline of one attempt: until the response headers for a stream, until the whole body
    # otherwise. None (the default) sets no deadline, so a long non-streamed generation is never
    # cut; the provider's `timeout_s` (no byte for that long) still ends a hung connection.
    timeout: float | None = Field(default=None, gt=0)
    timeouts: dict[str, PositiveFloat] = {}  # per target key overrides
    retry_timeouts: bool = False  # a slow target usually stays slow: fall back instead

    def timeout_for(self, target: str) -> float | None:
        found = self.timeouts.get(target)
        return found if found is not None else self.timeout

    def delay(
        self, retry: int, retry_after: float | None, rng: Callable[[], float]
    ) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None means give up on target."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            return max(0.0, retry_after) if retry_after <= self.retry_after_max else None
        ceiling = min(self.backoff_max, self.backoff_base * self.backoff_multiplier**retry)
        return ceiling * rng()  # "full jitter": spreads retries of many clients apart


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class CooldownConfig(BaseModel):
    """Circuit breaker per concrete target: open after `failures` failures in a row for
    `seconds`, then let one request try again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=3, ge=1, le=1000)
    seconds: float = Field(default=30.0, gt=0)


class Reliability(RetryPolicy):
    """The `reliability:` section of routing.yaml: RetryPolicy fields plus the cooldown.

    `timeouts` are keyed by public model name here; `retry_policy` expands them to the concrete
    targets ("provider/upstream-model") the pipeline tries."""

    cooldown: CooldownConfig = CooldownConfig()

    def retry_policy(self, targets_of: Mapping[str, Iterable[str]]) -> RetryPolicy:
        """A RetryPolicy whose `timeouts` name concrete target keys (model -> its target keys)."""
        expanded: dict[str, float] = {}
        for model, seconds in self.timeouts.items():
            for key in targets_of.get(model, (model,)):
                expanded.setdefault(key, seconds)
        fields = self.model_dump(exclude={"cooldown", "timeouts"})
        return RetryPolicy(**fields, timeouts=expanded)


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    opened_at: float | None = None


@dataclass
class Cooldowns:
    """Per-target circuit breaker: opens after `failures_to_open` consecutive failures, lets
    traffic try again (half-open) once `cooldown` seconds passed; one more failure reopens it."""

    failures_to_open: int = 3
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _state: dict[str, _Breaker] = field(default_factory=dict, init=False, repr=False)

    def configure(self, config: CooldownConfig) -> None:
        """Apply new settings (on reload) and keep the state of every breaker."""
        self.failures_to_open, self.cooldown = config.failures, config.seconds

    def state(self, target: str) -> BreakerState:
        breaker = self._state.get(target)
        if breaker is None or breaker.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - breaker.opened_at >= self.cooldown else "open"

    def available(self, target: str) -> bool:
        return self.state(target) != "open"

    def record_success(self, target: str) -> None:
        self._state.pop(target, None)

    def record_failure(self, target: str) -> None:
        breaker = self._state.setdefault(target, _Breaker())
        breaker.failures += 1
        if breaker.failures >= self.failures_to_open:
            breaker.opened_at = self.clock()


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class AttemptLog:
    """One try: which target, how it ended, and how long we waited before the next one."""

    target: str
    status: int | None
    error: str | None
    wait: float = 0.0


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Success(Generic[T]):
    value: T
    target: str
    attempts: tuple[AttemptLog, ...]


class AllTargetsFailed(Exception):
    """No target succeeded (or every target was cooling down). `last` is the final failure."""

    def __init__(self, attempts: Sequence[AttemptLog], last: UpstreamFailure | None) -> None:
        tried = ", ".join(f"{a.target}:{a.status or a.error}" for a in attempts) or "none"
        reason = "all targets are cooling down" if not attempts else "all targets failed"
        super().__init__(f"{reason} (attempts: {tried})")
        self.attempts = tuple(attempts)
        self.last = last


async def _attempt_once(
    target: str, attempt: Callable[[str], Awaitable[T]], policy: RetryPolicy
) -> T:
    limit = policy.timeout_for(target)
    try:
        if limit is None:  # the default: the provider's own socket timeouts apply
            return await attempt(target)
        async with asyncio.timeout(limit):
            return await attempt(target)
    except TimeoutError:
        raise UpstreamFailure(
            f"{target} did not answer within {limit:g} s" if limit else f"{target} timed out",
            code="timeout", retryable=policy.retry_timeouts, fallback=True,
        ) from None


async def run_with_fallbacks(
    targets: Sequence[str],
    attempt: Callable[[str], Awaitable[T]],
    policy: RetryPolicy,
    cooldowns: Cooldowns,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> Success[T]:
    """First success over `targets` in order. A failure that is not fallback-eligible (e.g. an
    upstream 400) is raised as is; when every target failed raise AllTargetsFailed."""
    log: list[AttemptLog] = []
    last: UpstreamFailure | None = None
    for target in targets:
        if not cooldowns.available(target):
            continue
        retry = 0
        while True:
            try:
                value = await _attempt_once(target, attempt, policy)
            except UpstreamFailure as failure:
                last = failure
                if not failure.fallback:
                    raise
                wait = policy.delay(retry, failure.retry_after, rng) if failure.retryable else None
                log.append(AttemptLog(target, failure.status, failure.code or failure.message,
                                      wait or 0.0))
                if wait is None:
                    # one failure per request: a single caller's retries must not open the
                    # breaker for everyone (it opens after N requests in a row failed)
                    cooldowns.record_failure(target)
                    break
                await sleep(wait)
                retry += 1
                continue
            cooldowns.record_success(target)
            log.append(AttemptLog(target, 200, None))
            return Success(value, target, tuple(log))
    raise AllTargetsFailed(log, last)
