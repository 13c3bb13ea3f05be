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
import math
import os
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

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
from proxy.spend.records import UsageRecord
from proxy.spend.redis_backend import _LUA, ROLLUP_VERSION, RedisSpendBackend, _script
from proxy.spend.rollups import (
    ArmSlice,
    Slice,
    bucket_start,
)

log = logging.getLogger(__name__)
LEASE_PREFIX = "lease:"
BATCH_RECORDS = 256  # records per batch script call
PRUNE_EVERY_S = 1.0  # how often a batch also drops index entries past the retention
EXPIRE_EVERY_S = 600.0  # how often a batch refreshes a rollup hash's TTL (retention + 32 days)
RETRY_DOWN_S = 1.0  # while Redis is unreachable the flusher tries (and logs) this often
SEQ_TTL_S = 86_400  # a live lease's seq key: outlives any re-send of a call whose reply was lost
SEQ_RELEASED_TTL_S = 600  # after the lease is given back (a late re-send is still skipped)
HELD_SUFFIX = ":held"  # <lease id>:held: the reservation of the holds of requests in flight
ISOLATE_AFTER = 3  # a batch Redis refused this often (not unreachable): records one by one


@dataclass(slots=True)
class _Op:
    """One lease call's payload, kept until Redis has answered it (re-sent with the same seq)."""

    seq: int
    keep: int
    held: int
    held_until: float  # clock time the latest of those holds expires
    release: bool
    windows: dict[str, tuple[Window, int]]  # wid -> (window, spend delta)
    breaker: dict[int, int]  # minute -> nanos
    rates: dict[tuple[str, int], int]  # ("rpm"|"tpm", minute) -> delta
    settlements: int


@dataclass(slots=True)
class _Department:
    """This replica's lease and unwritten spend for one department."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    amount: int = 0  # the lease as Redis holds it (while a call is unanswered: its lower bound)
    valid_until: float = 0.0  # clock time before which admissions may use the lease
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid -> (nanos, expiry)
    held: int = 0
    next_expiry: float = math.inf
    held_until: float = 0.0  # the latest expiry among the holds (0 once there are none)
    keys_until: float = 0.0  # clock time the reservation keys' TTL is known to reach
    unwritten: int = 0  # settled cost not written yet (sent in no call)
    claimed: int = 0  # free lease kept for requests whose lease call is out
    windows: dict[str, tuple[Window, int]] = field(default_factory=dict)  # pending spend
    breaker: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    rates: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    settlements: int = 0  # settlements in the pending deltas
    inflight: _Op | None = None  # sent, not answered (or the answer was lost)
    seq: int = 0
    current: tuple[Window, ...] = ()  # the budget windows of the latest plan (limits)
    known: dict[str, int] = field(default_factory=dict)  # spend per window at the last answer
    breaker_known: int | None = None
    breaker_minutes: int = 0
    breaker_max: int = 0
    rpm: int | None = None
    tpm: int | None = None
    minute: int = 0  # the minute the rate slices below belong to
    rpm_left: int = 0
    tpm_left: int = 0
    held_reported: int = 0
    last_call: float = 0.0  # monotonic
    call_gap: float = 0.0  # recent time between answered lease calls (a busy loop stretches it)
    ttl_refreshed: float = -math.inf  # monotonic: reservation keys' TTL last set
    # recent rate (per second, monotonic clock) for sizing slices
    need_rate: float = 0.0
    rpm_rate: float = 0.0
    tpm_rate: float = 0.0
    admitted_need: int = 0
    admitted_requests: int = 0
    admitted_tokens: int = 0
    rate_since: float = field(default_factory=time.monotonic)
    last_admit: float = -math.inf
    waiting: tuple[int, int, int] = (0, 0, 0)  # (budget, requests, tokens) of waiting admits
    refreshing: asyncio.Future[None] | None = None  # an admit's lease call, answered or not
    starved_until: float = -math.inf  # monotonic: the last top-up got nothing; wait for this

    @property
    def free(self) -> int:
        return self.amount - self.held - self.unwritten - self.claimed

    def pending(self) -> bool:
        return bool(self.windows or self.breaker or self.rates or self.unwritten)


class LeasedRedisBackend(RedisSpendBackend):
    """RedisSpendBackend with leases and batched writes; reads go to Redis after this replica's
    own queued writes (a replica reads what it wrote)."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str,
                 clock: Callable[[], float], retention_seconds: float, backlog_max_records: int,
                 owns_client: bool = False, batch_interval_seconds: float = 0.01,
                 lease_ttl_seconds: float = 30.0, lease_horizon_seconds: float = 0.1) -> None:
        super().__init__(client, prefix=prefix, clock=clock, retention_seconds=retention_seconds,
                         backlog_max_records=backlog_max_records, owns_client=owns_client)
        self._lease_call = client.register_script(_script("lease.lua"))
        self._batch = client.register_script((_LUA / "batch.lua").read_text())
        self.lease_id = LEASE_PREFIX + os.urandom(8).hex()
        self._interval = batch_interval_seconds
        self._lease_ttl = lease_ttl_seconds
        self._horizon = max(lease_horizon_seconds, 4 * batch_interval_seconds)
        self._departments: dict[str, _Department] = {}
        self._records: deque[UsageRecord] = deque()
        self._max_records = backlog_max_records
        # records and lease calls are written by two loops of one flusher task, each at its own
        # pace: a records write that takes long (hundreds of records) must not hold back the
        # lease calls that refill the slices requests are admitted from
        self._records_lock = asyncio.Lock()
        self._leases_lock = asyncio.Lock()
        self._wake_records = asyncio.Event()
        self._wake_leases = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        # spent keys (department, window id) whose TTL this process has set
        self._expired_windows: set[tuple[str, str]] = set()
        self._keys_hour, self._keys_of_hour = -1, list[str]()
        self._rollup_expiry: dict[int, float] = {}  # rollup hour -> monotonic time TTLs set
        self._pruned = -math.inf
        self._batch_loaded = False
        self._down = {"records": False, "leases": False}  # that loop's last pass found Redis down
        self._record_failures = 0  # times in a row Redis refused the head batch of records
        self._record_error_logged = -math.inf  # monotonic

    # ----- admission ---------------------------------------------------------------------------

    def _department(self, name: str) -> _Department:
        dept = self._departments.get(name)
        if dept is None:
            dept = self._departments[name] = _Department()
        return dept

    async def admit(self, plan: AdmitPlan) -> AdmitOutcome:
        dept = self._department(plan.department)
        self._learn(dept, plan)
        self._purge_holds(dept, plan.now)
        need = reservation_amount(plan.fixed_nanos, plan.per_token_nanos, plan.max_tokens)
        if self._fits(dept, plan, need):
            return self._admit_here(dept, plan, need, None)
        waiting = (need, 1, plan.tokens)
        dept.waiting = _plus(dept.waiting, waiting, 1)
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
                    dept.waiting = _plus(dept.waiting, waiting, -1)
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
                dept.waiting = _plus(dept.waiting, waiting, -1)
            self._wake_flusher()

    def _learn(self, dept: _Department, plan: AdmitPlan) -> None:
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

    def _fits(self, dept: _Department, plan: AdmitPlan, need: int) -> bool:
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

    def _admit_here(self, dept: _Department, plan: AdmitPlan, amount: int,
                    capped: int | None) -> AdmitOutcome:
        if plan.rpm is not None:
            dept.rpm_left -= 1
        if plan.tpm is not None:
            dept.tpm_left -= plan.tokens
        if plan.windows:
            dept.holds[plan.reservation_id] = (amount, plan.expires_at)
            dept.held += amount
            dept.next_expiry = min(dept.next_expiry, plan.expires_at)
            dept.held_until = max(dept.held_until, plan.expires_at)
        dept.admitted_need += amount
        dept.admitted_requests += 1
        dept.admitted_tokens += plan.tokens
        dept.last_admit = time.monotonic()
        return AdmitOutcome("ok", amount, capped)

    def _purge_holds(self, dept: _Department, now: float) -> None:
        """Holds past the reservation TTL count no more (as a reservation in Redis expires)."""
        if dept.next_expiry > now:
            return
        for rid in [r for r, (_, expires) in dept.holds.items() if expires <= now]:
            dept.held -= dept.holds.pop(rid)[0]
        dept.next_expiry = min((e for _, e in dept.holds.values()), default=math.inf)
        if not dept.holds:
            dept.held_until = 0.0

    async def _admit_remote(self, dept: _Department, plan: AdmitPlan, need: int,
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
        held = dept.holds.pop(settlement.reservation_id, None)
        if held is not None:
            dept.held -= held[0]
            if not dept.holds:
                dept.held_until = 0.0
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

    def _spent_view(self, dept: _Department, wid: str) -> int:
        """Spend in a window as this replica knows it: the last answer plus what it has not
        written (other replicas' spend since that answer is not in it)."""
        total = dept.known.get(wid, 0)
        pending = dept.windows.get(wid)
        if pending is not None:
            total += pending[1]
        if dept.inflight is not None and wid in dept.inflight.windows:
            total += dept.inflight.windows[wid][1]
        return total

    def _breaker_view(self, dept: _Department) -> int | None:
        if dept.breaker_known is None:
            return None
        pending = sum(dept.breaker.values())
        if dept.inflight is not None:
            pending += sum(dept.inflight.breaker.values())
        return dept.breaker_known + pending

    # ----- the lease call ----------------------------------------------------------------------

    def _slices(self, dept: _Department,
                extra: tuple[int, int, int] = (0, 0, 0)) -> tuple[int, int, int]:
        """(budget, rpm, tpm) the lease should hold free: the recent rate over the horizon, none
        once the department has been idle for a while."""
        now = time.monotonic()
        elapsed = now - dept.rate_since
        if elapsed >= self._interval:
            weight = min(1.0, elapsed / max(self._horizon, 1e-3))
            for name, count in (("need_rate", dept.admitted_need),
                                ("rpm_rate", dept.admitted_requests),
                                ("tpm_rate", dept.admitted_tokens)):
                rate = count / elapsed
                setattr(dept, name, rate * weight + getattr(dept, name) * (1 - weight))
            dept.admitted_need = dept.admitted_requests = dept.admitted_tokens = 0
            dept.rate_since = now
        if now - dept.last_admit > 2 * self._horizon:
            return extra
        # until the next call is answered: on a busy loop that can be longer than the horizon
        span = max(self._horizon, 2 * dept.call_gap)
        return (math.ceil(dept.need_rate * span) + extra[0],
                math.ceil(dept.rpm_rate * span) + extra[1],
                math.ceil(dept.tpm_rate * span) + extra[2])

    def _roll_minute(self, dept: _Department, minute: int) -> None:
        """Rate slices belong to one minute: what is left of an older one is given back."""
        if minute == dept.minute:
            return
        if minute == dept.minute + 1:
            if dept.rpm_left > 0:
                dept.rates[("rpm", dept.minute)] -= dept.rpm_left
            if dept.tpm_left > 0:
                dept.rates[("tpm", dept.minute)] -= dept.tpm_left
        dept.minute, dept.rpm_left, dept.tpm_left = minute, 0, 0

    def _call_windows(self, dept: _Department) -> list[Window]:
        """The windows a call touches: the current ones (room checked) and any older one with
        spend still to write."""
        seen = {w.wid: w for w in dept.current}
        for wid, (window, _) in (dept.inflight.windows if dept.inflight else dept.windows).items():
            seen.setdefault(wid, window)
        return list(seen.values())

    async def _call_lease(self, name: str, dept: _Department, *, now: float, keep_free: int,
                          need: int = 0, cap: bool = False, check: bool = False,
                          slices: tuple[int, int, int] = (0, 0, 0),
                          rate_needs: tuple[int, int] = (0, 0),
                          elapsed: float | None = None,
                          release: bool = False) -> tuple[list[Any], list[Window]]:
        """Send the pending deltas with a lease request; the caller holds dept.lock and has
        resolved any earlier unanswered call."""
        minute, frac = rate_position(now)
        if elapsed is None:
            elapsed = frac
        if dept.rpm is not None or dept.tpm is not None:
            self._roll_minute(dept, minute)
        budget_slice, rpm_slice, tpm_slice = slices
        if release:
            keep_free, budget_slice, rpm_slice, tpm_slice = 0, 0, 0, 0
            if dept.rpm_left > 0:
                dept.rates[("rpm", dept.minute)] -= dept.rpm_left
            if dept.tpm_left > 0:
                dept.rates[("tpm", dept.minute)] -= dept.tpm_left
            dept.rpm_left = dept.tpm_left = 0
        if not dept.current and not dept.windows:
            keep_free, budget_slice, need = 0, 0, 0
        dept.seq += 1
        keep = 0 if release else dept.held + max(0, keep_free)
        op = _Op(dept.seq, keep, dept.held, dept.held_until, release, dept.windows,
                 dict(dept.breaker), dict(dept.rates), dept.settlements)
        dept.windows, dept.unwritten, dept.settlements = {}, 0, 0
        dept.breaker, dept.rates = defaultdict(int), defaultdict(int)
        dept.amount = min(dept.amount, keep)  # what is given back is gone before Redis answers
        dept.inflight = op
        return await self._send(name, dept, op, now=now, need=need, cap=cap, check=check,
                                slices=(budget_slice, rpm_slice, tpm_slice),
                                rate_needs=rate_needs, elapsed=elapsed)

    async def _send(self, name: str, dept: _Department, op: _Op, *, now: float, need: int,
                    cap: bool, check: bool, slices: tuple[int, int, int],
                    rate_needs: tuple[int, int],
                    elapsed: float) -> tuple[list[Any], list[Window]]:
        minute = rate_position(now)[0]
        windows = self._call_windows(dept)
        current = {w.wid for w in dept.current}
        expires_at = now + self._lease_ttl
        mono = time.monotonic()
        refresh = mono - dept.ttl_refreshed > self._lease_ttl / 3
        # the reservation keys outlive the lease and the holds (a request's reservation TTL)
        lives_until = max(expires_at, op.held_until)
        resv_ttl = 0
        if refresh or lives_until + 60 > dept.keys_until:
            resv_ttl = max(math.ceil(self._lease_ttl), math.ceil(lives_until - now)) + 60
        keys = [*self._resv_keys(name), self._seq_key(name),
                self._dept(name, f"rpm:{minute}"), self._dept(name, f"rpm:{minute - 1}"),
                self._dept(name, f"tpm:{minute}"), self._dept(name, f"tpm:{minute - 1}"),
                *self._spent_keys(name, windows), *self._legacy_keys(name, windows)]
        rates: dict[tuple[str, int], int] = defaultdict(int)
        for (kind, at), delta in op.rates.items():
            if at in (minute, minute - 1):
                rates[(kind, at)] += delta
        breaker = ",".join(f"{m}={v}" for m, v in sorted(op.breaker.items()) if v > 0)
        args: list[Any] = [
            self.lease_id, repr(now), repr(expires_at), op.seq, op.held, op.keep, need,
            slices[0], 1 if cap else 0, 1 if check else 0, dept.breaker_minutes,
            dept.breaker_max, minute, breaker,
            -1 if dept.rpm is None else dept.rpm, -1 if dept.tpm is None else dept.tpm,
            repr(elapsed), rates[("rpm", minute)], rates[("rpm", minute - 1)],
            rates[("tpm", minute)], rates[("tpm", minute - 1)], rate_needs[0],
            slices[1] if dept.rpm is not None else 0, rate_needs[1],
            slices[2] if dept.tpm is not None else 0,
            resv_ttl, SEQ_RELEASED_TTL_S if op.release else SEQ_TTL_S, repr(op.held_until),
        ]  # fmt: skip
        for window in windows:
            delta = op.windows.get(window.wid, (window, 0))[1]
            ttl = 0
            if (name, window.wid) not in self._expired_windows and (delta or window.wid in current):
                ttl = max(1, window.ttl(now))
            args += [window.limit_nanos if window.wid in current else -1, delta, ttl]
        reply = await self._call(self._lease_call(keys=keys, args=args))
        # answered: the call is applied (now or before, if this is a re-send)
        dept.inflight = None
        if mono - dept.last_call < 2.0:
            dept.call_gap = 0.7 * dept.call_gap + 0.3 * (mono - dept.last_call)
        dept.last_call = mono
        dept.held_reported = op.held
        if refresh:
            dept.ttl_refreshed = mono
        if resv_ttl:
            dept.keys_until = now + resv_ttl
        if int(reply[0]) == 5:  # a re-send Redis had already run: the lease is what it holds
            dept.amount = int(reply[1])
            dept.valid_until = now + self._lease_ttl * 2 / 3 if dept.amount > 0 else 0.0
            return list(reply), windows
        for window, value in zip(windows, reply[3], strict=True):
            if op.windows.get(window.wid, (window, 0))[1]:  # EXPIRE of a key not yet written
                if len(self._expired_windows) > 1024:  # past windows: set their TTL again
                    self._expired_windows.clear()
                self._expired_windows.add((name, window.wid))  # does nothing
            dept.known[window.wid] = int(value)
        if len(dept.known) > 16:  # windows of past hours
            for wid in [w for w in dept.known if w not in current][:-4]:
                del dept.known[wid]
        if int(reply[5]) >= 0:
            dept.breaker_known = int(reply[5])
        dept.amount = int(reply[1])
        dept.valid_until = now + self._lease_ttl * 2 / 3 if dept.amount > 0 else 0.0
        if dept.minute == minute:
            dept.rpm_left += int(reply[10])
            dept.tpm_left += int(reply[13])
        if not check and slices != (0, 0, 0) and not (int(reply[2]) or int(reply[10])
                                                      or int(reply[13])):
            dept.starved_until = mono + 0.5  # nothing left to lease: don't ask every window
        return list(reply), windows

    def _seq_key(self, name: str) -> str:
        return self._dept(name, "n:lease:" + self.lease_id.removeprefix(LEASE_PREFIX))

    async def _resolve(self, name: str, dept: _Department) -> int:
        """Re-send a call whose answer was lost (applied at most once: its seq says so);
        returns the settlements it carried once answered."""
        op = dept.inflight
        if op is None:
            return 0
        await self._send(name, dept, op, now=self._clock(), need=0, cap=False, check=False,
                         slices=(0, 0, 0), rate_needs=(0, 0), elapsed=rate_position(
                             self._clock())[1])
        return op.settlements

    def _call_due(self, dept: _Department, now: float, mono: float) -> bool:
        if dept.inflight is not None or dept.pending():
            return True
        if dept.held != dept.held_reported:
            return True  # what it holds for requests in flight (other replicas report it)
        if dept.amount > 0 and dept.valid_until - now < self._lease_ttl / 3:
            return True  # keep it alive
        if dept.free > 0 and mono - dept.last_admit > 2 * self._horizon:
            return True  # idle: give it back
        if (dept.rpm_left > 0 or dept.tpm_left > 0) and (
                rate_position(now)[0] != dept.minute or mono - dept.last_admit > 2 * self._horizon):
            return True
        if mono < dept.starved_until:
            return False
        budget, rpm, tpm = self._slices(dept)
        return bool(
            (dept.current and budget and dept.free < budget // 2)
            or (dept.rpm is not None and rpm and dept.rpm_left < rpm // 2)
            or (dept.tpm is not None and tpm and dept.tpm_left < tpm // 2))

    async def _flush_department(self, name: str, dept: _Department, release: bool = False) -> int:
        """One lease call for the department (when it is due); returns the settlements
        written."""
        async with dept.lock:
            now, mono = self._clock(), time.monotonic()
            self._purge_holds(dept, now)
            if not release and not self._call_due(dept, now, mono):
                return 0
            written = await self._resolve(name, dept)
            if not release and not self._call_due(dept, now, mono) and written:
                return written
            budget, rpm, tpm = self._slices(dept)
            idle = mono - dept.last_admit > 2 * self._horizon
            free = max(0, dept.free)
            keep_free = 0 if idle else min(free, 2 * budget)
            if dept.rpm_left > 0 and idle:
                dept.rates[("rpm", dept.minute)] -= dept.rpm_left
                dept.rpm_left = 0
            if dept.tpm_left > 0 and idle:
                dept.rates[("tpm", dept.minute)] -= dept.tpm_left
                dept.tpm_left = 0
            slices = (max(0, budget - keep_free), max(0, rpm - dept.rpm_left),
                      max(0, tpm - dept.tpm_left))
            settled = dept.settlements
            await self._call_lease(name, dept, now=now, keep_free=keep_free, slices=slices,
                                   release=release)
            return written + settled

    # ----- records -----------------------------------------------------------------------------

    async def put_record(self, record: UsageRecord) -> None:
        if len(self._records) >= self._max_records:
            self._records.popleft()
            self.dropped_records += 1
        self._records.append(record)
        self._wake_flusher()

    async def _flush_records(self) -> int:
        """Write the queued records in batches. A batch Redis can't take goes back to the queue:
        BackendDown is raised; any other error (OOM, READONLY after a failover) stops this pass
        (logged once a second) and, once a batch has failed ISOLATE_AFTER times, the records
        are tried one by one so that one Redis refuses alone can't block the others."""
        written, left = 0, len(self._records)  # those queued now: new ones wait for the next pass
        while self._records and left > 0:
            if self._record_failures >= ISOLATE_AFTER:
                done, more = await self._isolate_records()
                written += done
                left -= BATCH_RECORDS
                if not more:
                    break
                continue
            batch = [self._records.popleft()
                     for _ in range(min(BATCH_RECORDS, len(self._records), left))]
            left -= len(batch)
            try:
                await self._write_records(batch)
            except BackendDown:
                self._requeue(batch)
                raise
            except Exception as exc:  # Redis refused it (OOM, READONLY): kept, retried
                self._requeue(batch)
                self._record_failures += 1
                self._log_record_error(exc)
                break
            self._record_failures = 0
            written += len(batch)
        return written

    async def _isolate_records(self) -> tuple[int, bool]:
        """Write records one by one; one that fails while the next is written is dropped
        (counted and logged); two failing in a row are Redis's failure, not a record's: both go
        back. Returns (written, whether to go on)."""
        written, suspect = 0, None
        while self._records and written < BATCH_RECORDS:
            record = self._records.popleft()
            try:
                await self._write_records([record])
            except BackendDown:
                self._requeue([record] if suspect is None else [suspect[0], record])
                raise
            except Exception as exc:  # a suspect until the next one is written
                if suspect is not None:
                    self._requeue([suspect[0], record])
                    self._log_record_error(exc)
                    return written, False
                suspect = (record, exc)
                continue
            written += 1
            if suspect is not None:
                self.dropped_records += 1
                log.error("usage record %s dropped: Redis refused it alone %d times: %s",
                          suspect[0].request_id, ISOLATE_AFTER + 1, suspect[1])
                suspect = None
        if suspect is not None:  # nothing else to tell: kept for the next pass
            self._requeue([suspect[0]])
            self._log_record_error(suspect[1])
            return written, False
        self._record_failures = 0
        return written, True

    def _requeue(self, batch: list[UsageRecord]) -> None:
        """Put records back at the head of the queue; past its bound the oldest are dropped."""
        self._records.extendleft(reversed(batch))
        while len(self._records) > self._max_records:
            self._records.popleft()
            self.dropped_records += 1

    def _log_record_error(self, exc: Exception) -> None:
        mono = time.monotonic()
        if mono - self._record_error_logged >= RETRY_DOWN_S:
            self._record_error_logged = mono
            log.warning("Redis refused a batch of usage records (%d queued, %d dropped so far); "
                        "retried: %s", len(self._records), self.dropped_records, exc)

    async def _write_records(self, batch: list[UsageRecord]) -> None:
        """The records and their department indexes, then per hour the script that indexes them
        in Prec:ts and adds them to the rollups: one MULTI on a single Redis; on a cluster (other
        slots) a pipeline, then the script in Prec:ts's slot."""
        try:
            await self._write_batch(batch)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load it and write again
            await self._call(self.client.script_load(self._batch.script))
            await self._write_batch(batch)

    async def _write_batch(self, batch: list[UsageRecord]) -> None:
        if not self._batch_loaded and not self._cluster:
            await self._call(self.client.script_load(self._batch.script))
            self._batch_loaded = True
        unique = list({r.request_id: r for r in batch}.values())  # the same id twice: once
        mono = time.monotonic()
        horizon = self._clock() - self._retention
        prune = mono - self._pruned >= PRUNE_EVERY_S or any(r.ts < horizon for r in unique)
        by_hour: dict[int, list[UsageRecord]] = defaultdict(list)
        for record in unique:
            by_hour[bucket_start("h", record.ts)].append(record)
        expire = {hour: mono - self._rollup_expiry.get(hour, -math.inf) >= EXPIRE_EVERY_S
                  for hour in by_hour}
        pipe = self.client.pipeline(transaction=not self._cluster)
        async with pipe:
            by_dept: dict[str, dict[str, float]] = defaultdict(dict)
            for record in unique:
                pipe.set(self._record_key(record.request_id), self._json(record),
                         ex=max(1, int(self._retention)))
                by_dept[record.department][record.request_id] = record.ts
            for department, members in by_dept.items():
                index = f"{self.prefix}rec:ts:{department}"
                pipe.zadd(index, members)
                if prune:
                    pipe.zremrangebyscore(index, "-inf", f"({horizon!r}")
            calls = {hour: self._batch_call(records, hour, horizon, prune, expire[hour])
                     for hour, records in by_hour.items()}
            if self._cluster:
                await self._call(pipe.execute())
                replies = [await self._call(self._batch(keys=k, args=a))
                           for k, a in calls.values()]
            else:
                for keys, args in calls.values():  # EVALSHA as is: a Script object would add
                    pipe.evalsha(self._batch.sha, len(keys), *keys, *args)  # SCRIPT EXISTS
                replies = (await self._call(pipe.execute()))[-len(calls):]
        for (hour, records), reply in zip(by_hour.items(), replies, strict=True):
            if int(reply[0]) == 0:  # some were counted before (a re-send): count the others
                counted = {int(i) - 1 for i in reply[1]}
                rest = [r for i, r in enumerate(records) if i not in counted]
                if rest:
                    keys, args = self._batch_call(rest, hour, horizon, prune, expire[hour])
                    await self._call(self._batch(keys=keys, args=args))
            if expire[hour]:
                self._rollup_expiry[hour] = mono
        if len(self._rollup_expiry) > 64:
            self._rollup_expiry.clear()
        if prune:
            self._pruned = mono

    def _rollup_keys(self, ts: float) -> list[str]:
        """The parent's keys, built once an hour: every key is a function of the record's hour
        (UTC hour, day and month starts), and a flush's records share one."""
        hour = bucket_start("h", ts)
        if hour != self._keys_hour:
            self._keys_of_hour, self._keys_hour = super()._rollup_keys(ts), hour
        return self._keys_of_hour

    def _json(self, record: UsageRecord) -> bytes:
        return orjson.dumps({**record.to_dict(), "rollup": ROLLUP_VERSION})

    def _batch_call(self, records: list[UsageRecord], hour: int, horizon: float, prune: bool,
                    expire: bool) -> tuple[list[str], list[Any]]:
        """batch.lua's keys and arguments: the records' rollup parts (rollup_parts, what
        record.lua adds one record at a time) summed per hash and field."""
        hashes: dict[str, tuple[int, dict[str, list[int]]]] = {}
        rows: list[Any] = []
        for record in records:
            for key, ttl, name, sums in self.rollup_parts(record):
                fields = hashes.setdefault(key, (ttl, {}))[1]
                total = fields.get(name)
                if total is None:
                    fields[name] = list(sums)
                else:
                    _add_into(total, sums)
            rows += [record.request_id, repr(record.ts)]
        heads: list[Any] = []
        named: list[Any] = []
        for ttl, fields in hashes.values():
            heads += [ttl, len(fields)]
            for name, total in fields.items():
                named += [name, ",".join(map(str, total))]
        keys = [f"{self.prefix}rec:ts", *hashes]
        args: list[Any] = [f"({horizon!r}", 1 if prune else 0, 1 if expire else 0, len(records),
                           len(hashes), *heads, *named, *rows]
        return keys, args

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

    def _unwritten_in(self, dept: _Department, wid: str) -> int:
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


def _plus(a: tuple[int, int, int], b: tuple[int, int, int],
          sign: int) -> tuple[int, int, int]:
    return a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2]


__all__ = ["LEASE_PREFIX", "LeasedRedisBackend"]


def _add_into(total: list[int], sums: list[int]) -> None:
    """Add `sums` to `total` element by element (a shorter row counts as zeros)."""
    for k, value in enumerate(sums):
        if k < len(total):
            total[k] += value
        else:
            total.append(value)
