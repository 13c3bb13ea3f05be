"""Budgets, rate limits, circuit breaker, usage records and notices over a pluggable backend.

`create_spend_store(redis, departments, pricing)` returns a `Ledger`: in-process when
`redis` is None, Redis otherwise (shared by every replica). Policy lives here in `Ledger`;
the backends (proxy.spend.memory, proxy.spend.redis_backend) only store and check atomically.
Usage reads and reports: proxy.spend.usage (a base of `Ledger`). Money is integer nano-dollars
internally (proxy.spend.pricing explains why)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.config.departments import PERIODS, Department, DepartmentsConfig
from proxy.spend.budgets import (
    AdmitOutcome,
    AdmitPlan,
    BackendDown,
    BreakerPlan,
    BudgetExhausted,
    BudgetStatus,
    CircuitOpen,
    DepartmentRateLimited,
    Reservation,
    Settlement,
    SpendBackend,
    SpendBackendUnavailable,
    SpendDimension,
    SpendObserver,
    SpendOptions,
    Window,
    reservation_amount,
    window_at,
)
from proxy.spend.memory import MemorySpendBackend
from proxy.spend.notices import Notices
from proxy.spend.notify import BudgetNotice, NoticeKind, NoticeSink
from proxy.spend.pricing import PricingTable, nanos_to_dollars, to_nanos
from proxy.spend.records import UsageRecord
from proxy.spend.usage import UsageReads, unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_OPTIONS = SpendOptions()

__all__ = [
    "BudgetExhausted", "BudgetStatus", "CircuitOpen", "DepartmentRateLimited", "Ledger",
    "Reservation", "SpendBackendUnavailable", "SpendDimension", "SpendObserver", "SpendOptions",
    "create_spend_store",
]  # fmt: skip


class Ledger(UsageReads):
    """Pricing + department policy over a storage backend (memory or Redis)."""

    def __init__(
        self,
        backend: SpendBackend,
        departments: DepartmentsConfig,
        pricing: PricingTable,
        *,
        options: SpendOptions = DEFAULT_OPTIONS,
        notifier: NoticeSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.departments = departments
        self.pricing = pricing
        self.options = options
        self._clock = clock
        self._notices = Notices(backend, notifier, clock)
        self._retired: dict[str, Department] = {}  # removed by a reload, reservations in flight
        self._observer: SpendObserver | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._backfiller: asyncio.Task[None] | None = None
        # reservation ids: a random per-store prefix + a counter (unique across replicas, and
        # cheaper than a uuid4 per request)
        self._id_prefix = os.urandom(8).hex()
        self._id_sequence = itertools.count(1)
        self._window_cache: dict[tuple[str, int], tuple[Department, tuple[Window, ...]]] = {}
        self._breaker_cache: dict[str, tuple[Department, BreakerPlan | None]] = {}
        # latest window spend per department, handed to the observer by report_budgets()
        self._unreported: dict[str, tuple[tuple[Window, ...], tuple[int, ...]]] = {}
        # the last spend this replica saw per (department, window) and breaker: with leases the
        # other replicas' spend arrives in steps, so a threshold is crossed from the last value
        # seen, not from `spent - cost`
        self._seen: dict[tuple[str, str], int] = {}
        self._seen_breaker: dict[str, int] = {}

    def reconfigure(
        self, departments: DepartmentsConfig, pricing: PricingTable, notifier: NoticeSink | None
    ) -> None:
        """Swap policy on reload; the backend (and every reservation in flight) is kept.
        Departments that disappear stay known for settling what they still hold."""
        for name, dept in self.departments.departments.items():
            if name not in departments.departments:
                self._retired[name] = dept
        for name in departments.departments:
            self._retired.pop(name, None)
        self.departments, self.pricing = departments, pricing
        self._notices.sink = notifier

    def observe(self, observer: SpendObserver | None) -> None:
        self._observer = observer

    def _department(self, name: str) -> Department:
        retired = self._retired.get(name)
        return retired if retired is not None else self.departments.get(name)

    # ----- admission ---------------------------------------------------------------------------

    async def reserve(
        self, department: str, model: str, prompt_tokens: int, max_tokens: int | None = None
    ) -> Reservation:
        """Check breaker, rpm/tpm and every budget window, then hold the worst-case cost.

        Raises CircuitOpen, RateLimited, BudgetExhausted, or SpendBackendUnavailable (fail-closed).
        `Reservation.max_tokens` is set when the request must be capped to fit the budget."""
        dept = self.departments.get(department)
        plan = self._plan(dept, model, prompt_tokens, max_tokens)
        outcome = await self._admit(dept, plan)
        if outcome is None:
            worst = reservation_amount(plan.fixed_nanos, plan.per_token_nanos, plan.max_tokens)
            return self._reservation(plan, model, worst, None, degraded=True)
        return self._reservation(plan, model, outcome.reserved_nanos, outcome.max_tokens)

    async def admit_free(self, department: str, prompt_tokens: int) -> None:
        """Admit a request that spends nothing (a cache hit): the breaker and rpm/tpm as for
        any request (it counts towards them), and no budget window spent (its spend and holds
        short of the limit: one nano-dollar of room). Nothing is held, so nothing is released;
        a hit is never refused, nor its output capped, because an upstream call would not have
        fitted. Raises as `reserve` does."""
        dept = self.departments.get(department)
        plan = self._plan(dept, None, prompt_tokens, 0)
        outcome = await self._admit(dept, plan)
        if outcome is not None and outcome.reserved_nanos:  # held all the same (Redis's
            # script without leases): free it
            await self.release(self._reservation(plan, "", outcome.reserved_nanos, None))

    async def _admit(self, dept: Department, plan: AdmitPlan) -> AdmitOutcome | None:
        """The backend's admission of `plan`, refusals raised; None: admitted without checks
        (the backend is down and the fail mode is open)."""
        try:
            outcome = await self.backend.admit(plan)
        except BackendDown as exc:
            if self.options.fail_mode == "closed":
                raise unavailable(exc) from exc
            log.warning("spend backend down; admitting %s without budget checks", dept.name)
            return None
        if outcome.status != "ok":
            self._refuse(dept, plan, outcome)
        return outcome

    def _plan(
        self, dept: Department, model: str | None, prompt_tokens: int, max_tokens: int | None
    ) -> AdmitPlan:
        """The admission of a call to `model`; `model` None: of a call that spends nothing
        (it needs one nano-dollar of room and holds nothing)."""
        now = self._clock()
        free = model is None
        fixed, per_token = (1, 0.0) if model is None else self.pricing.worst_case(model,
                                                                                  prompt_tokens)
        tokens = max_tokens if max_tokens is not None else dept.default_max_tokens
        return AdmitPlan(
            department=dept.name,
            reservation_id=f"{self._id_prefix}{next(self._id_sequence):x}",
            now=now,
            expires_at=now + self.options.reservation_ttl_seconds,
            windows=self._windows(dept, now),
            fixed_nanos=fixed,
            per_token_nanos=per_token,
            max_tokens=tokens,
            min_tokens=min(dept.min_capped_tokens, tokens),
            cap=dept.cap_max_tokens and not free,
            rpm=dept.rpm,
            tpm=dept.tpm,
            tokens=max(prompt_tokens, 0),
            breaker=self._breaker_plan(dept),
            hold=not free,
        )

    def _breaker_plan(self, dept: Department) -> BreakerPlan | None:
        """The department's breaker as integers, built once per Department object."""
        hit = self._breaker_cache.get(dept.name)
        if hit is None or hit[0] is not dept:  # a reload brings new Department objects
            breaker, plan = dept.circuit_breaker, None
            if breaker is not None:
                plan = BreakerPlan(breaker.window_minutes, to_nanos(breaker.max_dollars))
            hit = self._breaker_cache[dept.name] = (dept, plan)
        return hit[1]

    def _windows(self, dept: Department, now: float) -> tuple[Window, ...]:
        """Budget windows containing `now`; the same for a whole UTC hour (day and month
        boundaries fall on hours), so they are computed once an hour per department."""
        key = (dept.name, int(now // 3600))
        hit = self._window_cache.get(key)
        if hit is None or hit[0] is not dept:  # a reload brings new Department objects
            if len(self._window_cache) > 256:
                self._window_cache.clear()
            limits = ((p, dept.budgets.limit(p)) for p in PERIODS)
            windows = tuple(window_at(p, now, to_nanos(limit)) for p, limit in limits if limit)
            hit = self._window_cache[key] = (dept, windows)
        return hit[1]

    def _reservation(
        self, plan: AdmitPlan, model: str, nanos: int, cap: int | None, degraded: bool = False
    ) -> Reservation:
        return Reservation(
            plan.reservation_id, plan.department, model, nanos, cap, plan.tokens, plan.now,
            degraded,
        )  # fmt: skip

    def _refuse(self, dept: Department, plan: AdmitPlan, outcome: AdmitOutcome) -> None:
        if outcome.status == "breaker":
            raise CircuitOpen(dept.name, outcome.retry_after)
        if outcome.status in ("rpm", "tpm"):
            raise DepartmentRateLimited(dept.name, outcome.status, outcome.retry_after)
        failing = [plan.windows[i] for i in outcome.failing]
        latest = max(failing, key=lambda w: w.ends_at)
        for window in failing:
            self._notify_budget(dept.name, window, "exhausted", None, window.limit_nanos)
        raise BudgetExhausted(dept.name, latest.period, latest.ends_at - plan.now)

    # ----- settlement --------------------------------------------------------------------------

    async def settle(
        self,
        reservation: Reservation,
        cost_nanos: int,
        record: UsageRecord | None = None,
        *,
        total_tokens: int | None = None,
    ) -> float | None:
        """Free the hold, add the real cost (integer nano-dollars; 0 for cache hits/failures)
        and store `record` if given. Returns dollars left in the tightest budget window (None
        without budgets or while Redis is down). Settling twice is a no-op."""
        if not isinstance(cost_nanos, int) or isinstance(cost_nanos, bool):
            raise TypeError(f"cost_nanos must be int nano-dollars, got {cost_nanos!r}")
        if reservation.settled:
            return None
        reservation.settled = True
        if record is not None and total_tokens is None:
            total_tokens = record.input_tokens + record.output_tokens
        outcome = await self._commit(reservation, cost_nanos, total_tokens)
        if record is not None:
            await self.add_record(record)
        return outcome

    async def _commit(
        self, reservation: Reservation, cost_nanos: int, total_tokens: int | None
    ) -> float | None:
        dept = self._department(reservation.department)
        now = self._clock()
        breaker = dept.circuit_breaker
        settlement = Settlement(
            department=dept.name,
            reservation_id=reservation.id,
            actual_nanos=cost_nanos,
            ts=now,
            windows=self._windows(dept, now),
            breaker_minutes=breaker.window_minutes if breaker else None,
            token_delta=0 if total_tokens is None else total_tokens - reservation.admitted_tokens,
            held_until=None if reservation.degraded
            else reservation.created_at + self.options.reservation_ttl_seconds,
        )
        outcome = await self.backend.commit(settlement)
        if outcome is None:  # queued while the backend is down; notices are best effort
            return None
        lowest_mark = min(dept.soft_alerts, default=1.0)
        for window, spent in zip(settlement.windows, outcome.spent_nanos, strict=True):
            key = (dept.name, window.wid)
            before = min(spent - cost_nanos, self._seen.get(key, spent - cost_nanos))
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[key] = spent
            if spent >= window.limit_nanos * lowest_mark:  # else no threshold can be crossed
                self._check_thresholds(dept, window, before, spent)
        if breaker and outcome.breaker_nanos is not None:
            ceiling = to_nanos(breaker.max_dollars)
            after = outcome.breaker_nanos
            before = min(after - cost_nanos, self._seen_breaker.get(dept.name, after - cost_nanos))
            self._seen_breaker[dept.name] = after
            if before <= ceiling < after:
                self._notify_breaker(dept, after, ceiling)
        return self._report_left(dept, settlement.windows, outcome.spent_nanos)

    def _report_left(
        self, dept: Department, windows: tuple[Window, ...], spent_nanos: tuple[int, ...]
    ) -> float | None:
        """Dollars left in the tightest window. The observer gets every window's room from
        report_budgets(): only the latest state matters there, not one call per request."""
        if self._observer is not None:
            self._unreported[dept.name] = (windows, spent_nanos)
        if not windows:
            return None
        tightest = min(w.limit_nanos - s for w, s in zip(windows, spent_nanos, strict=True))
        return nanos_to_dollars(max(0, tightest))

    def report_budgets(self) -> None:
        """Give the observer the room left in each window settled since the last report (called
        before metrics are rendered and once a second by the flush loop)."""
        observer = self._observer
        pending, self._unreported = self._unreported, {}
        if observer is None:
            return
        for name, (windows, spent_nanos) in pending.items():
            for window, spent in zip(windows, spent_nanos, strict=True):
                observer.budget(name, window.period,
                                nanos_to_dollars(max(0, window.limit_nanos - spent)),
                                nanos_to_dollars(window.limit_nanos))

    async def release(self, reservation: Reservation) -> None:
        """Nothing was charged (a cache hit, a request that failed before its call): free the
        hold. Settling 0 would add nothing to any window, breaker or rate, and cross no
        threshold, so a backend that holds in process just drops the hold (a sixth of a cache
        hit's CPU went to that settlement); Redis without leases settles it in its script."""
        if reservation.settled:
            return
        if not reservation.degraded and self.backend.drop_hold(reservation.department,
                                                                reservation.id):
            reservation.settled = True
            return
        await self.settle(reservation, 0)

    def _check_thresholds(self, dept: Department, window: Window, before: int, after: int) -> None:
        limit = window.limit_nanos
        if before < limit <= after:
            self._notify_budget(dept.name, window, "exhausted", None, after)
        for threshold in dept.soft_alerts:
            mark = limit * threshold
            if before < mark <= after and after < limit:
                self._notify_budget(dept.name, window, "soft_threshold", threshold, after)

    # ----- circuit breaker & status -----------------------------------------------------------

    async def resume(self, department: str) -> None:
        """Admin override: forget the breaker's spend history so the department is admitted."""
        self.departments.get(department)
        try:
            await self.backend.resume(department)
            await self.backend.release_notice(self._breaker_key(department))
        except BackendDown as exc:
            raise unavailable(exc) from exc
        self._notices.forget_locally(self._breaker_key(department))

    async def is_paused(self, department: str) -> bool:
        breaker = self.departments.get(department).circuit_breaker
        if breaker is None:
            return False
        spent = await self._guard(
            self.backend.breaker_spend(department, self._clock(), breaker.window_minutes)
        )
        return spent > to_nanos(breaker.max_dollars)

    async def budget_status(self, department: str) -> list[BudgetStatus]:
        dept = self.departments.get(department)
        now = self._clock()
        windows = self._windows(dept, now)
        spent, reserved = await self._guard(self.backend.window_state(dept.name, windows, now))
        return [
            BudgetStatus(
                dept.name,
                w.period,
                nanos_to_dollars(w.limit_nanos),
                nanos_to_dollars(s),
                nanos_to_dollars(reserved),
                w.ends_at - now,
            )  # fmt: skip
            for w, s in zip(windows, spent, strict=True)
        ]

    async def add_record(self, record: UsageRecord) -> None:
        """Store a usage record (reads: proxy.spend.usage)."""
        await self.backend.put_record(record)

    # ----- notices -----------------------------------------------------------------------------

    def _notify_budget(
        self, department: str, window: Window, kind: NoticeKind, threshold: float | None,
        spent_nanos: int,
    ) -> None:  # fmt: skip
        suffix = f":{threshold}" if threshold is not None else ""
        key = f"notice:{department}:{window.period}:{window.wid}:{kind}{suffix}"
        notice = BudgetNotice(
            kind, department, window.period, nanos_to_dollars(spent_nanos),
            nanos_to_dollars(window.limit_nanos), threshold,
        )  # fmt: skip
        self._emit(notice, key, window.ends_at - self._clock() + 60)

    def _notify_breaker(self, dept: Department, spent_nanos: int, ceiling: int) -> None:
        assert dept.circuit_breaker is not None
        minutes = dept.circuit_breaker.window_minutes
        notice = BudgetNotice(
            "breaker_tripped", dept.name, "breaker", nanos_to_dollars(spent_nanos),
            nanos_to_dollars(ceiling), window_minutes=minutes,
        )  # fmt: skip
        self._emit(notice, self._breaker_key(dept.name), minutes * 60.0)

    def _breaker_key(self, department: str) -> str:
        return f"notice:{department}:breaker"

    def _emit(self, notice: BudgetNotice, key: str, ttl_seconds: float) -> None:
        self._notices.emit(notice, key, ttl_seconds)

    async def drain_notices(self) -> None:
        """Wait for notices being sent (tests, shutdown)."""
        await self._notices.drain()

    # ----- lifecycle ---------------------------------------------------------------------------

    def backlog_size(self) -> int:
        """Records and settlements waiting for Redis to come back (for a gauge)."""
        return self.backend.backlog_size()

    async def flush(self) -> int:
        """Write the backlog now; returns how many items were written."""
        return await self.backend.flush()

    async def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever())
        backfill = getattr(self.backend, "backfill_rollups", None)
        if backfill is not None and self._backfiller is None:
            self._backfiller = asyncio.create_task(self._backfill(backfill))

    async def _backfill(self, backfill: Callable[[], Awaitable[int]]) -> None:
        """Records written before rollups existed (an upgrade) join them in the background."""
        try:
            added = await backfill()
        except BackendDown as exc:
            log.warning("rollup backfill not done (Redis unreachable); next start retries: %s",
                        exc)
            return
        if added:
            log.info("rollups: %d records written before rollups existed added", added)

    async def _flush_forever(self) -> None:
        next_status = 0.0
        while True:
            if self.backend.backlog_size():
                await self.backend.flush()
            if self._observer is not None:
                self.report_budgets()
                self._observer.backlog(self.backend.backlog_size())
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.options.status_interval_seconds
                    await self.publish_status()
            await asyncio.sleep(self.options.flush_interval_seconds)

    async def publish_status(self) -> None:
        """Give the observer every department's budget state (other replicas' spend too)."""
        observer = self._observer
        if observer is None:
            return
        try:
            for name in self.departments.names:
                for status in await self.budget_status(name):
                    observer.budget(name, status.period, status.remaining_dollars,
                                    status.limit_dollars)
        except SpendBackendUnavailable as exc:
            log.warning("budget gauges not refreshed: %s", exc)

    async def close(self) -> None:
        if self._backfiller is not None:
            self._backfiller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backfiller
            self._backfiller = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.drain_notices()
        await self.backend.flush()
        await self.backend.close()


def create_spend_store(
    redis: aioredis.Redis | RedisCluster | str | None,
    departments: DepartmentsConfig,
    pricing: PricingTable,
    *,
    options: SpendOptions = DEFAULT_OPTIONS,
    notifier: NoticeSink | None = None,
    clock: Callable[[], float] = time.time,
) -> Ledger:
    """In-process store when `redis` is None, else a Redis-backed one on that client (shared,
    not closed by the store) or on a client of its own for a URL. Call start()/close()."""
    backend: SpendBackend
    if redis is None:
        backend = MemorySpendBackend(
            clock=clock,
            max_records=options.max_memory_records,
            retention_seconds=options.record_retention_seconds,
        )
    else:
        from proxy.spend.leases import LeasedRedisBackend
        from proxy.spend.redis_backend import RedisSpendBackend

        owns_client = isinstance(redis, str)
        client = spend_redis_client(redis, options) if isinstance(redis, str) else redis
        if options.leases:
            backend = LeasedRedisBackend(
                client, prefix=options.key_prefix, clock=clock,
                retention_seconds=options.record_retention_seconds,
                backlog_max_records=options.backlog_max_records, owns_client=owns_client,
                batch_interval_seconds=options.batch_interval_seconds,
                lease_ttl_seconds=options.lease_ttl_seconds,
                lease_horizon_seconds=options.lease_horizon_seconds)
        else:
            backend = RedisSpendBackend(client, prefix=options.key_prefix, clock=clock,
                                        retention_seconds=options.record_retention_seconds,
                                        backlog_max_records=options.backlog_max_records,
                                        owns_client=owns_client)
    return Ledger(backend, departments, pricing, options=options, notifier=notifier, clock=clock)


def spend_redis_client(url: str, options: SpendOptions,
                       cluster: bool = False) -> aioredis.Redis | RedisCluster:
    """A client with the spend store's pool limits and timeouts (MET_* spend settings)."""
    from proxy.runtime.redis_client import connect_state

    return connect_state(url, cluster, max_connections=options.redis_max_connections,
                         pool_wait_seconds=options.redis_pool_wait_seconds,
                         timeout_seconds=options.redis_timeout_seconds)
