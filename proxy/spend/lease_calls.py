"""The lease call (lua/lease.lua) and when a replica makes one (proxy.spend.leases): one call per
department writes the spend settled since the last, reports the holds of requests in flight,
and tops the lease up, or gives back what is not used, sized from the recent rate."""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.spend.budgets import Window, rate_position
from proxy.spend.lease_state import DepartmentLease, LeaseCall
from proxy.spend.record_batches import BatchedRecordsBackend
from proxy.spend.redis_backend import _script

LEASE_PREFIX = "lease:"
SEQ_TTL_S = 86_400  # a live lease's seq key: outlives any re-send of a call whose reply was lost
SEQ_RELEASED_TTL_S = 600  # after the lease is given back (a late re-send is still skipped)
HELD_SUFFIX = ":held"  # <lease id>:held: the reservation of the holds of requests in flight


class LeaseCallsBackend(BatchedRecordsBackend):
    """Batched records plus each department's lease and the calls that keep it."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str,
                 clock: Callable[[], float], retention_seconds: float, backlog_max_records: int,
                 owns_client: bool = False, batch_interval_seconds: float = 0.01,
                 lease_ttl_seconds: float = 30.0, lease_horizon_seconds: float = 0.1) -> None:
        super().__init__(client, prefix=prefix, clock=clock, retention_seconds=retention_seconds,
                         backlog_max_records=backlog_max_records, owns_client=owns_client)
        self._lease_call = client.register_script(_script("lease.lua"))
        self.lease_id = LEASE_PREFIX + os.urandom(8).hex()
        self._interval = batch_interval_seconds
        self._lease_ttl = lease_ttl_seconds
        self._horizon = max(lease_horizon_seconds, 4 * batch_interval_seconds)
        self._departments: dict[str, DepartmentLease] = {}
        # spent keys (department, window id) whose TTL this process has set
        self._expired_windows: set[tuple[str, str]] = set()

    def _department(self, name: str) -> DepartmentLease:
        dept = self._departments.get(name)
        if dept is None:
            dept = self._departments[name] = DepartmentLease()
        return dept

    def _purge_holds(self, dept: DepartmentLease, now: float) -> None:
        """Holds past the reservation TTL count no more (as a reservation in Redis expires)."""
        if dept.next_expiry > now:
            return
        for rid in [r for r, (_, expires) in dept.holds.items() if expires <= now]:
            dept.unhold(rid)
        dept.next_expiry = min((e for _, e in dept.holds.values()), default=math.inf)

    def _slices(self, dept: DepartmentLease,
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

    def _roll_minute(self, dept: DepartmentLease, minute: int) -> None:
        """Rate slices belong to one minute: what is left of an older one is given back."""
        if minute == dept.minute:
            return
        if minute == dept.minute + 1:
            if dept.rpm_left > 0:
                dept.rates[("rpm", dept.minute)] -= dept.rpm_left
            if dept.tpm_left > 0:
                dept.rates[("tpm", dept.minute)] -= dept.tpm_left
        dept.minute, dept.rpm_left, dept.tpm_left = minute, 0, 0

    def _call_windows(self, dept: DepartmentLease) -> list[Window]:
        """The windows a call touches: the current ones (room checked) and any older one with
        spend still to write."""
        seen = {w.wid: w for w in dept.current}
        for wid, (window, _) in (dept.inflight.windows if dept.inflight else dept.windows).items():
            seen.setdefault(wid, window)
        return list(seen.values())

    async def _call_lease(self, name: str, dept: DepartmentLease, *, now: float, keep_free: int,
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
        op = LeaseCall(dept.seq, keep, dept.held, dept.held_until, release, dept.windows,
                 dict(dept.breaker), dict(dept.rates), dept.settlements)
        dept.windows, dept.unwritten, dept.settlements = {}, 0, 0
        dept.breaker, dept.rates = defaultdict(int), defaultdict(int)
        dept.amount = min(dept.amount, keep)  # what is given back is gone before Redis answers
        dept.inflight = op
        return await self._send(name, dept, op, now=now, need=need, cap=cap, check=check,
                                slices=(budget_slice, rpm_slice, tpm_slice),
                                rate_needs=rate_needs, elapsed=elapsed)

    async def _send(self, name: str, dept: DepartmentLease, op: LeaseCall, *, now: float, need: int,
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

    async def _resolve(self, name: str, dept: DepartmentLease) -> int:
        """Re-send a call whose answer was lost (applied at most once: its seq says so);
        returns the settlements it carried once answered."""
        op = dept.inflight
        if op is None:
            return 0
        await self._send(name, dept, op, now=self._clock(), need=0, cap=False, check=False,
                         slices=(0, 0, 0), rate_needs=(0, 0), elapsed=rate_position(
                             self._clock())[1])
        return op.settlements

    def _call_due(self, dept: DepartmentLease, now: float, mono: float) -> bool:
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

    async def _flush_department(self, name: str, dept: DepartmentLease,
                                release: bool = False) -> int:
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
