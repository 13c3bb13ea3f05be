"""Spend types, errors and pure window arithmetic shared by the memory and Redis backends.

All amounts are integer nano-dollars (see proxy.spend.pricing). The Redis Lua scripts in
proxy.spend.redis_backend mirror `plan_admission`/`sliding_count`/`breaker_retry_after` exactly;
the shared test-suite runs against both backends to keep them in step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from proxy import errors
from proxy.config.departments import Period
from proxy.spend.pricing import nanos_to_dollars
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import ArmLevel, ArmSlice, Detail, Granularity, Slice

AdmitStatus = Literal["ok", "budget", "rpm", "tpm", "breaker"]
RateKind = Literal["rpm", "tpm"]
SpendDimension = Literal["department", "key", "user", "model"]
RATE_WINDOW_SECONDS = 60
WINDOW_KEY_GRACE_SECONDS = 86_400


class SpendRefusal(errors.ProxyError):
    """Mixin data for spend refusals: department and whole seconds to wait (Retry-After)."""

    def _init_refusal(self, message: str, department: str, retry_after: float) -> None:
        self.department = department
        self.retry_after = max(1, math.ceil(round(retry_after, 6)))  # no 20.000000004 -> 21
        errors.ProxyError.__init__(self, message, headers={"Retry-After": str(self.retry_after)})


class BudgetExhausted(SpendRefusal, errors.InsufficientQuota):
    """The department's budget for `period` is used up; `retry_after` = seconds to the reset."""

    def __init__(self, department: str, period: Period, retry_after: float) -> None:
        seconds = max(1, math.ceil(round(retry_after, 6)))
        message = (
            f"Department '{department}' has exhausted its {period} budget; "
            f"it resets in {seconds} s."
        )
        self._init_refusal(message, department, retry_after)
        self.period = period


class DepartmentRateLimited(SpendRefusal, errors.RateLimited):
    def __init__(self, department: str, limit: Literal["rpm", "tpm"], retry_after: float) -> None:
        message = f"Department '{department}' is over its {limit} limit."
        self._init_refusal(message, department, retry_after)
        self.limit = limit


class CircuitOpen(SpendRefusal, errors.RateLimited):
    code = "circuit_breaker_open"

    def __init__(self, department: str, retry_after: float) -> None:
        message = (
            f"Department '{department}' is paused: spend in the circuit-breaker window is over "
            "its ceiling. An admin can resume it."
        )
        self._init_refusal(message, department, retry_after)


class SpendBackendUnavailable(errors.ServiceUnavailable):
    """Redis is unreachable and the store fails closed (-> HTTP 503)."""

    code = "spend_backend_unavailable"


class BackendDown(Exception):
    """Raised by a backend when its storage is unreachable (internal to the spend package)."""


@dataclass(frozen=True, slots=True)
class Window:
    """One calendar budget window: `wid` identifies it, `ends_at` is the reset time (unix s)."""

    period: Period
    wid: str
    ends_at: float
    limit_nanos: int = 0

    def ttl(self, now: float) -> int:
        return max(0, math.ceil(self.ends_at - now) + WINDOW_KEY_GRACE_SECONDS)


def window_at(period: Period, now: float, limit_nanos: int = 0) -> Window:
    """The UTC hour/day/month containing `now`."""
    if period == "hourly":
        start = math.floor(now / 3600)
        return Window(period, f"h{start}", (start + 1) * 3600.0, limit_nanos)
    if period == "daily":
        start = math.floor(now / 86_400)
        return Window(period, f"d{start}", (start + 1) * 86_400.0, limit_nanos)
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    ends = datetime(year, month, 1, tzinfo=UTC).timestamp()
    return Window(period, f"m{moment.year:04d}{moment.month:02d}", ends, limit_nanos)


@dataclass(frozen=True, slots=True)
class BreakerPlan:
    window_minutes: int
    max_nanos: int


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class AdmitPlan:
    """Everything a backend needs to admit one request atomically."""

    department: str
    reservation_id: str
    now: float
    expires_at: float
    windows: tuple[Window, ...]
    fixed_nanos: int
    per_token_nanos: float
    max_tokens: int
    min_tokens: int
    cap: bool
    rpm: int | None
    tpm: int | None
    tokens: int
    breaker: BreakerPlan | None
    # False: admit without holding anything (a request that spends nothing: a cache hit); a
    # backend that holds anyway says so in AdmitOutcome.reserved_nanos, and the hold is released
    hold: bool = True


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class AdmitOutcome:
    status: AdmitStatus
    reserved_nanos: int = 0
    max_tokens: int | None = None
    failing: tuple[int, ...] = ()  # indexes into plan.windows that could not fit the request
    retry_after: float = 0.0


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Settlement:
    department: str
    reservation_id: str
    actual_nanos: int
    ts: float
    windows: tuple[Window, ...]
    breaker_minutes: int | None
    token_delta: int
    # when the backend drops the hold by itself (unix s); None: nothing was held there (admitted
    # fail-open). Lets a re-sent settlement tell "already settled" from "not yet".
    held_until: float | None = None


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class CommitOutcome:
    spent_nanos: tuple[int, ...]  # per settlement window, after adding
    breaker_nanos: int | None = None


@dataclass(slots=True)
class Reservation:
    """A hold on budget taken before forwarding; settle it exactly once."""

    id: str
    department: str
    model: str
    reserved_nanos: int
    max_tokens: int | None  # cap to apply to the request; None = leave max_tokens alone
    admitted_tokens: int
    created_at: float
    degraded: bool = False  # admitted without checks because the backend was down (fail-open)
    settled: bool = field(default=False, compare=False)

    @property
    def capped(self) -> bool:
        return self.max_tokens is not None

    @property
    def reserved_dollars(self) -> float:
        return nanos_to_dollars(self.reserved_nanos)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    department: str
    period: Period
    limit_dollars: float
    spent_dollars: float
    reserved_dollars: float
    resets_in_seconds: float

    @property
    def remaining_dollars(self) -> float:
        return max(0.0, self.limit_dollars - self.spent_dollars - self.reserved_dollars)


def reservation_amount(fixed: int, per_token: float, tokens: int) -> int:
    return fixed + math.ceil(per_token * tokens)


def plan_admission(
    plan: AdmitPlan, spent: list[int], reserved_total: int
) -> tuple[int, int | None, tuple[int, ...]]:
    """Budget decision: (amount to reserve, capped max_tokens or None, failing windows).

    Mirrors the budget part of the Redis admit script; an empty `failing` means admitted."""
    need = reservation_amount(plan.fixed_nanos, plan.per_token_nanos, plan.max_tokens)
    headrooms = [window.limit_nanos - used - reserved_total
                 for window, used in zip(plan.windows, spent, strict=True)]
    if not headrooms or min(headrooms) >= need:  # the common case: every window has room
        return need, None, ()
    failing = tuple(i for i, room in enumerate(headrooms) if room < need)
    capped = cap_to(plan, min(headrooms))
    if capped is not None:
        return capped[0], capped[1], ()
    return 0, None, failing


def cap_to(plan: AdmitPlan, room: int) -> tuple[int, int] | None:
    """(amount, max_tokens) of the request capped to fit `room`, or None when the department
    does not cap or fewer than its min_tokens would fit."""
    if plan.cap and plan.per_token_nanos > 0 and room > plan.fixed_nanos:
        tokens = math.floor((room - plan.fixed_nanos) / plan.per_token_nanos)
        while (
            tokens > 0
            and reservation_amount(plan.fixed_nanos, plan.per_token_nanos, tokens) > room
        ):
            tokens -= 1
        if tokens >= plan.min_tokens:
            return reservation_amount(plan.fixed_nanos, plan.per_token_nanos, tokens), tokens
    return None


def rate_position(now: float) -> tuple[int, float]:
    """(current minute number, elapsed fraction of it)."""
    minute = math.floor(now / RATE_WINDOW_SECONDS)
    return minute, (now - minute * RATE_WINDOW_SECONDS) / RATE_WINDOW_SECONDS


def sliding_count(current: int, previous: int, elapsed: float) -> float:
    """Sliding-window estimate: the previous minute weighted by how much of it still overlaps."""
    return previous * (1.0 - elapsed) + current


def sliding_retry_after(
    current: int, previous: int, elapsed: float, cost: int, limit: int
) -> float:
    """Seconds until `cost` more would fit under `limit` (at least the next window start)."""
    if cost > limit:
        return float(RATE_WINDOW_SECONDS)
    if current + cost <= limit and previous > 0:
        needed_elapsed = 1.0 - (limit - current - cost) / previous
        return max(1.0, (needed_elapsed - elapsed) * RATE_WINDOW_SECONDS)
    return max(1.0, (1.0 - elapsed) * RATE_WINDOW_SECONDS)


def breaker_retry_after(
    buckets: list[int], first_minute: int, window_minutes: int, max_nanos: int, now: float
) -> float:
    """Seconds until enough old minute buckets leave the window for spend to drop to the ceiling.

    `buckets` are oldest first, starting at `first_minute`."""
    remaining = sum(buckets)
    for offset, amount in enumerate(buckets):
        remaining -= amount
        if remaining <= max_nanos:
            return (first_minute + offset + window_minutes) * 60 - now
    return window_minutes * 60.0


class SpendBackend(Protocol):
    """Storage primitives; `proxy.spend.ledger.Ledger` holds the policy on top of them."""

    async def admit(self, plan: AdmitPlan) -> AdmitOutcome: ...
    async def commit(self, settlement: Settlement) -> CommitOutcome | None: ...
    def drop_hold(self, department: str, reservation_id: str) -> bool: ...
    async def resume(self, department: str) -> None: ...
    async def breaker_spend(self, department: str, now: float, window_minutes: int) -> int: ...
    async def window_state(
        self, department: str, windows: tuple[Window, ...], now: float
    ) -> tuple[list[int], int]: ...
    async def claim_notice(self, key: str, ttl_seconds: int) -> bool: ...
    async def release_notice(self, key: str) -> None: ...
    async def put_record(self, record: UsageRecord) -> None: ...
    async def get_record(self, request_id: str) -> UsageRecord | None: ...
    async def set_feedback(self, request_id: str, score: float, comment: str | None) -> bool: ...
    async def query_records(
        self, from_ts: float, to_ts: float, department: str | None
    ) -> list[UsageRecord]: ...
    async def rollups(
        self, buckets: Iterable[tuple[Granularity, int]], department: str | None,
        detail: Detail = "fine",
    ) -> list[Slice]: ...
    async def arm_rollups(self, buckets: Iterable[tuple[ArmLevel, int]],
                          head: int = 0) -> list[ArmSlice]: ...
    async def minute_rollups(self, hours: Iterable[int], department: str | None
                             ) -> list[Slice]: ...
    async def minute_costs(self, hours: Iterable[int]) -> list[tuple[str, int, int]]: ...
    async def recent_records(
        self, from_ts: float, to_ts: float, department: str | None, limit: int
    ) -> list[UsageRecord]: ...
    def backlog_size(self) -> int: ...
    async def flush(self) -> int: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SpendOptions:
    key_prefix: str = "meterline:"
    fail_mode: Literal["closed", "open"] = "closed"  # when Redis is unreachable at reserve()
    reservation_ttl_seconds: float = 600.0  # a dead replica's holds are freed after this
    record_retention_seconds: float = 35 * 86_400.0
    # embedded backend bound (MET_SPEND_MAX_RECORDS): ~470 bytes a record once the store turns
    # over, ~9 MB; reports read the rollups, the raw records only exports, the recent list,
    # feedback and range edges inside an hour (docs/performance.md, "Soak")
    max_memory_records: int = 20_000
    backlog_max_records: int = 100_000  # records queued while Redis is down
    flush_interval_seconds: float = 1.0
    # Redis: budget/rate leases and batched writes (docs/scaling.md, "Leases"); False: one
    # admit and one settle script and one record script per request (the design before)
    leases: bool = True
    batch_interval_seconds: float = 0.01  # one flush window: records and spend written after it
    lease_ttl_seconds: float = 30.0  # a crashed replica's lease is freed after this
    lease_horizon_seconds: float = 0.1  # a lease slice covers this long at the recent rate
    redis_timeout_seconds: float = 2.0
    redis_max_connections: int = 64  # requests wait for a free connection beyond this
    redis_pool_wait_seconds: float = 10.0
    status_interval_seconds: float = 15.0  # how often the observer gets every budget's state


class SpendObserver(Protocol):
    """Told about budget state (after each settlement and periodically) and the backlog."""

    def budget(self, department: str, period: Period, remaining: float, limit: float) -> None: ...
    def backlog(self, size: int) -> None: ...
