"""Redis spend backend with budget and rate leases and batched writes (docs/scaling.md, "Leases").

The per-request design (proxy.spend.redis_backend) runs an admit script, a settle script and a
record script per request: ~80 Redis commands. Here a replica instead:

* **leases** a slice of each department's remaining budget and rate allowance in one atomic step
  (lua/lease.lua) and admits requests against it in process: no Redis on the request path while
  the slice lasts. The lease is a reservation named `lease:<replica id>` in the department's
  reservation set, so every replica (and an older version admitting per request) counts it, and
  it expires `lease_ttl_seconds` after its last refresh: a crashed replica's lease is freed then.
  Slices are sized from the recent rate (`lease_horizon_seconds` of worst-case holds) and the
  script grants at most a quarter of the room left beyond the request's own need, so slices shrink
  as a budget runs low and the last dollars are admitted one request at a time, exactly as
  before. A request the slice can't cover goes to Redis at once (one script call, which also
  writes what this replica settled so far), and is refused only when the budget, its rates or
  the breaker say so in Redis.
* **settles locally**: the hold is freed, the cost added to the department's unwritten spend.
* **writes in batches**: one flusher task, every `batch_interval_seconds` (one flush window),
  writes all records queued (lua/batch.lua: several records per call, rollup deltas summed per
  group, so each rollup hash is read and written once per window) and, per department, one
  lease call that adds the window's spend to the budget windows, the breaker and the tpm
  corrections, tops the lease up or gives back what is not used, and refreshes its expiry.

Every lease call carries a sequence number: one re-sent after a lost reply is applied once.
While Redis is unreachable the replica keeps admitting against its lease until the lease's
expiry (the money is reserved in Redis), queues what it settles, and fails closed (or open, per
MET_SPEND_FAIL_MODE) for anything the lease doesn't cover; the queue is written when Redis is
back. Shutdown writes everything and gives the leases back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.spend.budgets import (
    AdmitOutcome,
    AdmitPlan,
    BackendDown,
    CommitOutcome,
    Settlement,
    Window,
    breaker_retry_after,
    cap_to,
    rate_position,
    reservation_amount,
    sliding_retry_after,
)
from proxy.spend.lease_calls import HELD_SUFFIX, LEASE_PREFIX, LeaseCallsBackend
from proxy.spend.lease_state import DepartmentLease, add_need
from proxy.spend.record_batches import RETRY_DOWN_S
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import ArmSlice, Slice

log = logging.getLogger(__name__)


class LeasedRedisBackend(LeaseCallsBackend):
    """RedisSpendBackend with leases and batched writes; reads go to Redis after this replica's
    own queued writes (a replica reads what it wrote)."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str,
                 clock: Callable[[], float], retention_seconds: float, backlog_max_records: int,
                 owns_client: bool = False, batch_interval_seconds: float = 0.01,
                 lease_ttl_seconds: float = 30.0, lease_horizon_seconds: float = 0.1) -> None:
        super().__init__(client, prefix=prefix, clock=clock, retention_seconds=retention_seconds,
                         backlog_max_records=backlog_max_records, owns_client=owns_client,
                         batch_interval_seconds=batch_interval_seconds,
                         lease_ttl_seconds=lease_ttl_seconds,
                         lease_horizon_seconds=lease_horizon_seconds)
        # records and lease calls are written by two loops of one flusher task, each at its own
        # pace: a records write that takes long (hundreds of records) must not hold back the
        # lease calls that refill the slices requests are admitted from
        self._leases_lock = asyncio.Lock()
        self._wake_records = asyncio.Event()
        self._wake_leases = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._down = {"records": False, "leases": False}  # that loop's last pass found Redis down

    # ----- admission ---------------------------------------------------------------------------

    async def admit(self, plan: AdmitPlan) -> AdmitOutcome:
        dept = self._department(plan.department)
        self._learn(dept, plan)
        self._purge_holds(dept, plan.now)
        need = reservation_amount(plan.fixed_nanos, plan.per_token_nanos, plan.max_tokens)
        if self._fits(dept, plan, need):
            return self._admit_here(dept, plan, need, None)
        waiting = (need, 1, plan.tokens)
        dept.waiting = add_need(dept.waiting, waiting, 1)
        counted = True
        try:
            while (call := dept.refreshing) is not None:
                # one lease call is out for requests like this one (it asks for them too): wait
                # for its answer, then all of them check at once. Queued on dept.lock instead,
                # each waiter cost the lock's hand-over, a turn of the loop: on a busy loop,
                # tens of waiters waited 100-200 ms (p99 215 ms at c=64, 1 ms without leases)
                await asyncio.shield(call)
                self._purge_holds(dept, self._clock())
                if self._fits(dept, plan, need):
                    return self._admit_here(dept, plan, need, None)
            call = dept.refreshing = asyncio.get_running_loop().create_future()
            try:
                async with dept.lock:
                    dept.waiting = add_need(dept.waiting, waiting, -1)
                    counted = False
                    self._purge_holds(dept, self._clock())
                    if self._fits(dept, plan, need):
                        return self._admit_here(dept, plan, need, None)
                    # the call asks for the requests waiting behind this one too
                    return await self._admit_remote(dept, plan, need, dept.waiting)
            finally:
                dept.refreshing = None
                if not call.done():
                    call.set_result(None)
        finally:
            if counted:
                dept.waiting = add_need(dept.waiting, waiting, -1)
            self._wake_flusher()

    def _learn(self, dept: DepartmentLease, plan: AdmitPlan) -> None:
        if plan.windows is not dept.current:  # a reload or a new hour (the ledger caches them)
            before = {w.wid: w.limit_nanos for w in dept.current}
            if any(w.limit_nanos < before.get(w.wid, w.limit_nanos) for w in plan.windows):
                # a lowered budget: the free part, leased under the old limit, is not used
                # (the next call gives it back); requests ask Redis against the new limit
                dept.amount = min(dept.amount, dept.held + dept.unwritten)
        dept.current = plan.windows
        dept.rpm, dept.tpm = plan.rpm, plan.tpm
        if plan.breaker is not None:
            dept.breaker_minutes = plan.breaker.window_minutes
            dept.breaker_max = plan.breaker.max_nanos
        else:
            dept.breaker_minutes = dept.breaker_max = 0

    def _fits(self, dept: DepartmentLease, plan: AdmitPlan, need: int) -> bool:
        if plan.breaker is not None:
            view = self._breaker_view(dept)
            if view is None or view > plan.breaker.max_nanos:
                return False  # Redis decides (another replica may have resumed it)
            if time.monotonic() - dept.last_call > self._horizon:
                return False  # the sum is old: another replica may have tripped it since
        if plan.rpm is not None or plan.tpm is not None:
            if rate_position(plan.now)[0] != dept.minute:
                return False
            if plan.rpm is not None and dept.rpm_left < 1:
                return False
            if plan.tpm is not None and dept.tpm_left < plan.tokens:
                return False
        if plan.windows:
            return dept.valid_until > plan.now and dept.free >= need
        return True

    def _admit_here(self, dept: DepartmentLease, plan: AdmitPlan, amount: int,
                    capped: int | None) -> AdmitOutcome:
        if plan.rpm is not None:
            dept.rpm_left -= 1
        if plan.tpm is not None:
            dept.tpm_left -= plan.tokens
        if not plan.hold:
            amount = 0
        elif plan.windows:
            dept.holds[plan.reservation_id] = (amount, plan.expires_at)
            dept.held += amount
            dept.next_expiry = min(dept.next_expiry, plan.expires_at)
            dept.held_until = max(dept.held_until, plan.expires_at)
        dept.admitted_need += amount
        dept.admitted_requests += 1
        dept.admitted_tokens += plan.tokens
        dept.last_admit = time.monotonic()
        return AdmitOutcome("ok", amount, capped)

    async def _admit_remote(self, dept: DepartmentLease, plan: AdmitPlan, need: int,
                            waiting: tuple[int, int, int]) -> AdmitOutcome:
        """The lease can't cover the request: one lease call that also writes what is pending,
        asks for the request's need (and a slice), and checks breaker and rates in Redis."""
        await self._resolve(plan.department, dept)
        free_before = max(0, dept.free)
        minute, elapsed = rate_position(plan.now)
        self._roll_minute(dept, minute)
        rpm_need = max(0, 1 - dept.rpm_left) if plan.rpm is not None else 0
        tpm_need = max(0, plan.tokens - dept.tpm_left) if plan.tpm is not None else 0
        budget_need = max(0, need - free_before) if plan.windows else 0
        slices = self._slices(dept, extra=waiting)
        # the free part it counts on is held for it while the call is out (else requests
        # admitted here meanwhile take it, and it is refused with the budget untouched)
        mine = min(free_before, need) if plan.windows else 0
        dept.claimed += mine
        try:
            reply, windows = await self._call_lease(
                plan.department, dept, now=plan.now, keep_free=free_before, need=budget_need,
                cap=plan.cap, check=True, slices=slices, rate_needs=(rpm_need, tpm_need),
                elapsed=elapsed)
        finally:
            dept.claimed -= mine
        status = int(reply[0])
        if status == 4 and plan.breaker is not None:
            buckets = [int(b) for b in reply[7]]
            retry = breaker_retry_after(buckets, int(reply[6]), plan.breaker.window_minutes,
                                        plan.breaker.max_nanos, plan.now)
            return AdmitOutcome("breaker", retry_after=retry)
        if status in (2, 3):
            cur, prev = (int(reply[8]), int(reply[9])) if status == 2 else (int(reply[11]),
                                                                              int(reply[12]))
            limit = (plan.rpm if status == 2 else plan.tpm) or 0
            cost = rpm_need if status == 2 else tpm_need
            retry = sliding_retry_after(cur, prev, elapsed, cost, limit)
            return AdmitOutcome("rpm" if status == 2 else "tpm", retry_after=retry)
        if not plan.windows or dept.free >= need:
            return self._admit_here(dept, plan, need, None)
        room = dept.free
        capped = cap_to(plan, room) if room > 0 else None
        if capped is not None:
            return self._admit_here(dept, plan, capped[0], capped[1])
        rooms = dict(zip((w.wid for w in windows), (int(r) for r in reply[4]), strict=False))
        failing = tuple(i for i, w in enumerate(plan.windows)
                        if free_before + rooms.get(w.wid, 0) < need)
        return AdmitOutcome("budget", failing=failing or tuple(range(len(plan.windows))))

    # ----- settlement --------------------------------------------------------------------------

    async def commit(self, settlement: Settlement) -> CommitOutcome:
        dept = self._department(settlement.department)
        dept.unhold(settlement.reservation_id)
        cost = settlement.actual_nanos
        now = self._clock()
        minute = rate_position(settlement.ts)[0]
        written = False
        if cost:
            for window in settlement.windows:
                if window.ttl(now) <= 0:
                    continue  # its keys are gone; nothing reads it any more
                old = dept.windows.get(window.wid)
                dept.windows[window.wid] = (window, cost + (old[1] if old else 0))
                written = True
            if settlement.windows:
                dept.unwritten += cost
        breaker = None
        if settlement.breaker_minutes:
            if cost:
                dept.breaker[minute] += cost
                written = True
            dept.breaker_minutes = settlement.breaker_minutes
            view = self._breaker_view(dept)
            breaker = cost if view is None else view
        if settlement.token_delta and dept.tpm is not None:
            dept.rates[("tpm", minute)] += settlement.token_delta
            written = True
        if written:
            dept.settlements += 1
        self._wake_flusher()
        spent = tuple(self._spent_view(dept, w.wid) for w in settlement.windows)
        return CommitOutcome(spent, breaker)

    def drop_hold(self, department: str, reservation_id: str) -> bool:
        """A commit of nothing, without its work: the hold is this replica's, in its lease."""
        if self._department(department).unhold(reservation_id):
            self._wake_flusher()  # the lease call reports what is held
        return True

    def _spent_view(self, dept: DepartmentLease, wid: str) -> int:
        """Spend in a window as this replica knows it: the last answer plus what it has not
        written (other replicas' spend since that answer is not in it)."""
        total = dept.known.get(wid, 0)
        pending = dept.windows.get(wid)
        if pending is not None:
            total += pending[1]
        if dept.inflight is not None and wid in dept.inflight.windows:
            total += dept.inflight.windows[wid][1]
        return total

    def _breaker_view(self, dept: DepartmentLease) -> int | None:
        if dept.breaker_known is None:
            return None
        pending = sum(dept.breaker.values())
        if dept.inflight is not None:
            pending += sum(dept.inflight.breaker.values())
        return dept.breaker_known + pending

    # ----- records -----------------------------------------------------------------------------

    # ----- the flusher -------------------------------------------------------------------------

    def _wake_flusher(self) -> None:
        if self._closing:
            return
        self._wake_records.set()
        self._wake_leases.set()
        if self._flusher is None or self._flusher.done():
            try:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
            except RuntimeError:  # no loop: flush() or close() writes it
                self._flusher = None

    async def _flush_forever(self) -> None:
        await asyncio.gather(
            self._flush_loop("records", self._wake_records, self._records_pass,
                             lambda: bool(self._records)),
            self._flush_loop("leases", self._wake_leases, self._leases_pass,
                             self._leases_need_attention))

    async def _flush_loop(self, name: str, wake: asyncio.Event,
                          write: Callable[[], Awaitable[int]],
                          attention: Callable[[], bool]) -> None:
        while True:
            await wake.wait()
            await asyncio.sleep(RETRY_DOWN_S if self._down[name] else self._interval)
            wake.clear()
            try:
                await write()
            except Exception:  # never let the flusher die: the next window retries
                log.exception("spend flush failed")
            if attention():
                wake.set()

    def _leases_need_attention(self) -> bool:
        return any(
            d.pending() or d.inflight is not None or d.amount > 0 or d.rpm_left > 0
            or d.tpm_left > 0 or d.held != d.held_reported
            for d in self._departments.values())

    def backlog_size(self) -> int:
        settlements = sum(d.settlements + (d.inflight.settlements if d.inflight else 0)
                          for d in self._departments.values())
        return settlements + len(self._records)

    async def flush(self, release: bool = False) -> int:
        """Write what is queued now (and, with `release`, give every lease back); returns the
        records and settlements written."""
        counts = await asyncio.gather(self._records_pass(), self._leases_pass(release))
        return sum(counts)

    async def _records_pass(self) -> int:
        async with self._records_lock:
            self._down["records"] = False
            try:
                return await self._flush_records()
            except BackendDown as exc:
                self._down["records"] = True
                log.warning("Redis unreachable; %d records queued: %s", len(self._records), exc)
                return 0

    async def _leases_pass(self, release: bool = False) -> int:
        """One lease call per department that needs one; stops at the first Redis can't take."""
        written = 0
        async with self._leases_lock:
            self._down["leases"] = False
            for name, dept in list(self._departments.items()):
                try:
                    written += await self._flush_department(name, dept, release)
                except BackendDown as exc:
                    self._down["leases"] = True
                    log.warning("Redis unreachable; spend of %s queued: %s", name, exc)
                    break
                except Exception:  # one department's bad key must not stop the others' writes
                    log.exception("spend of %s not written; retried next window", name)
        return written

    async def _flush_for(self, department: str | None = None, records: bool = False) -> None:
        """Before a read: this replica's own queued writes go first (best effort)."""
        if records:
            async with self._records_lock:
                with contextlib.suppress(BackendDown):
                    await self._flush_records()
        if department is not None and department in self._departments:
            async with self._leases_lock:
                with contextlib.suppress(BackendDown):
                    await self._flush_department(department, self._departments[department])

    async def close(self) -> None:
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush(release=True)
        await super().close()

    # ----- reads: after this replica's own writes ---------------------------------------------

    async def window_state(self, department: str, windows: tuple[Window, ...],
                           now: float) -> tuple[list[int], int]:
        await self._flush_for(department)
        live, amount_by_id, legacy_held, spent = await self._read_windows(department, windows)
        mine = self._departments.get(department)
        reserved = 0
        for rid, expires in live:
            rid = rid.decode() if isinstance(rid, bytes) else str(rid)
            if expires <= now:
                continue
            lease = rid.startswith(LEASE_PREFIX)
            if lease and (not rid.endswith(HELD_SUFFIX) or rid == self.lease_id + HELD_SUFFIX):
                continue  # a free part (not held for any request), or this replica's holds
            reserved += int(amount_by_id.get(rid.encode(), amount_by_id.get(rid, 0)) or 0)
        if mine is not None:
            reserved += mine.held
        reserved += legacy_held
        if mine is not None:  # written in a call still unanswered (Redis down) or not yet
            spent = [s + self._unwritten_in(mine, w.wid) for s, w in zip(spent, windows,
                                                                         strict=True)]
        return spent, reserved

    def _unwritten_in(self, dept: DepartmentLease, wid: str) -> int:
        total = dept.windows.get(wid, (None, 0))[1]
        if dept.inflight is not None:
            total += dept.inflight.windows.get(wid, (None, 0))[1]
        return total

    async def breaker_spend(self, department: str, now: float, window_minutes: int) -> int:
        await self._flush_for(department)
        spent = await super().breaker_spend(department, now, window_minutes)
        dept = self._departments.get(department)
        if dept is not None:
            first = int(now // 60) - window_minutes + 1
            for pending in (dept.breaker, dept.inflight.breaker if dept.inflight else {}):
                spent += sum(v for m, v in pending.items() if m >= first)
        return spent

    async def resume(self, department: str) -> None:
        await self._flush_for(department)
        await super().resume(department)
        dept = self._departments.get(department)
        if dept is not None:
            dept.breaker_known = None

    async def get_record(self, request_id: str) -> UsageRecord | None:
        await self._flush_for(records=True)
        return await super().get_record(request_id)

    async def set_feedback(self, request_id: str, score: float, comment: str | None) -> bool:
        await self._flush_for(records=True)
        return await super().set_feedback(request_id, score, comment)

    async def query_records(self, from_ts: float, to_ts: float,
                            department: str | None) -> list[UsageRecord]:
        await self._flush_for(records=True)
        return await super().query_records(from_ts, to_ts, department)

    async def recent_records(self, from_ts: float, to_ts: float, department: str | None,
                             limit: int) -> list[UsageRecord]:
        await self._flush_for(records=True)
        return await super().recent_records(from_ts, to_ts, department, limit)

    async def rollups(self, buckets: Iterable[tuple[Any, int]], department: str | None,
                      detail: Any = "fine") -> list[Slice]:
        await self._flush_for(records=True)
        return await super().rollups(buckets, department, detail)

    async def minute_rollups(self, hours: Iterable[int], department: str | None) -> list[Slice]:
        await self._flush_for(records=True)
        return await super().minute_rollups(hours, department)

    async def minute_costs(self, hours: Iterable[int]) -> list[tuple[str, int, int]]:
        await self._flush_for(records=True)
        return await super().minute_costs(hours)

    async def arm_rollups(self, buckets: Iterable[tuple[Any, int]],
                          head: int = 0) -> list[ArmSlice]:
        await self._flush_for(records=True)
        return await super().arm_rollups(buckets, head)


__all__ = ["LEASE_PREFIX", "LeasedRedisBackend"]

