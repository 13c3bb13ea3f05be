"""In-process spend backend: one replica, nothing survives a restart, records are bounded.

Each method runs without awaiting in the middle, so on one event loop it is as atomic as the Redis
scripts it mirrors."""

from __future__ import annotations

import operator
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from proxy.spend.budgets import (
    AdmitOutcome,
    AdmitPlan,
    CommitOutcome,
    RateKind,
    Settlement,
    Window,
    breaker_retry_after,
    plan_admission,
    rate_position,
    sliding_count,
    sliding_retry_after,
)
from proxy.spend.records import UsageRecord, packed_ts
from proxy.spend.rollups import (
    DAY,
    DETAILS,
    GRANULARITIES,
    LEAN_DAY,
    MINUTE_RETENTION,
    ArmKey,
    ArmLevel,
    ArmSlice,
    Detail,
    Granularity,
    Group,
    Slice,
    arm_key,
    arm_totals,
    bucket_start,
    group_of,
    in_department,
    quality_delta,
    rollup_key,
    usage_totals,
)

ROLL_AFTER = 512  # records gathered before they are rolled up without a read asking for it


class MemorySpendBackend:
    def __init__(
        self, *, clock: Callable[[], float], max_records: int, retention_seconds: float
    ) -> None:
        self._clock = clock
        self._max_records = max_records
        self._retention = retention_seconds
        self._spent: dict[tuple[str, str], int] = defaultdict(int)
        self._spent_expiry: dict[tuple[str, str], float] = {}
        self._reservations: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        # per department: sum of live holds, and a lower bound on their earliest expiry, so a
        # purge scans the holds only when one may have expired (not on every request)
        self._reserved_total: dict[str, int] = defaultdict(int)
        self._next_expiry: dict[str, float] = {}
        self._rates: dict[tuple[str, str, int], int] = defaultdict(int)
        self._breaker: dict[str, dict[int, int]] = defaultdict(dict)
        self._notices: dict[str, float] = {}
        self._pruned_minute: int | None = None
        # request id -> UsageRecord.packed(): a third of the record object's memory, decoded
        # only when read (reports read the rollups; raw records are read for exports, the
        # recent list, feedback and the edges of a range no whole hour covers)
        self._records: OrderedDict[str, bytes] = OrderedDict()
        # (granularity, bucket start) -> group -> sums; bounded by the retention, not by
        # max_records, so reports stay whole after old raw records are dropped
        self._rollups: dict[tuple[Detail, Granularity, int], dict[Group, list[int]]] = {}
        self._arms: dict[tuple[Granularity, int], dict[ArmKey, list[int]]] = {}
        self._minutes: dict[int, dict[tuple[Group, int], list[int]]] = {}  # hour -> coarse
        # records not rolled up yet, by everything their groups, arm key and minute are made of:
        # rolled up a key at a time (most records share a few keys) before anything reads the
        # rollups, or once ROLL_AFTER have gathered
        self._unrolled: dict[tuple[Any, ...], list[UsageRecord]] = {}
        self._unrolled_count = 0
        self._pruned_day: int | None = None
        self._starts_hour = -1
        self._starts_of_hour: tuple[tuple[Granularity, int], ...] = ()

    # ----- budgets, rates, breaker -----------------------------------------------------------

    async def admit(self, plan: AdmitPlan) -> AdmitOutcome:
        dept = plan.department
        reserved = self._purge_reservations(dept, plan.now)
        breaker = plan.breaker
        if breaker is not None and (spent_by_minute := self._breaker[dept]):
            minute = int(plan.now // 60)  # the window's minutes (commit prunes)
            first = minute - breaker.window_minutes + 1
            if sum(v for m, v in spent_by_minute.items()
                   if first <= m <= minute) > breaker.max_nanos:
                buckets = [spent_by_minute.get(m, 0) for m in range(first, minute + 1)]
                retry = breaker_retry_after(
                    buckets, first, breaker.window_minutes, breaker.max_nanos, plan.now
                )
                return AdmitOutcome("breaker", retry_after=retry)
        minute, elapsed = rate_position(plan.now)
        if plan.rpm is not None and (
                refused := self._over_rate(dept, "rpm", minute, elapsed, 1, plan.rpm)):
            return refused
        if plan.tpm is not None and (
                refused := self._over_rate(dept, "tpm", minute, elapsed, plan.tokens, plan.tpm)):
            return refused
        spent = self._spent
        amount, capped, failing = plan_admission(
            plan, [spent.get((dept, w.wid), 0) for w in plan.windows], reserved)
        if failing:
            return AdmitOutcome("budget", failing=failing)
        rates = self._rates
        rates[(dept, "rpm", minute)] += 1
        rates[(dept, "tpm", minute)] += plan.tokens
        if not plan.hold:
            return AdmitOutcome("ok")
        self._hold(dept, plan.reservation_id, amount, plan.expires_at)
        return AdmitOutcome("ok", amount, capped)

    def _over_rate(self, dept: str, kind: RateKind, minute: int, elapsed: float, cost: int,
                   limit: int) -> AdmitOutcome | None:
        rates = self._rates
        cur, prev = rates.get((dept, kind, minute), 0), rates.get((dept, kind, minute - 1), 0)
        if sliding_count(cur, prev, elapsed) + cost > limit:
            return AdmitOutcome(kind, retry_after=sliding_retry_after(cur, prev, elapsed, cost,
                                                                     limit))
        return None

    def _hold(self, department: str, rid: str, amount: int, expires_at: float) -> None:
        live = self._reservations[department]
        previous = live.get(rid)
        if previous is not None:
            self._reserved_total[department] -= previous[0]
        live[rid] = (amount, expires_at)
        self._reserved_total[department] += amount
        self._next_expiry[department] = min(self._next_expiry.get(department, expires_at),
                                            expires_at)

    def _unhold(self, department: str, rid: str) -> None:
        held = self._reservations[department].pop(rid, None)
        if held is not None:
            self._reserved_total[department] -= held[0]

    def _purge_reservations(self, department: str, now: float) -> int:
        """Drop expired holds; returns the total still held."""
        if self._next_expiry.get(department, now + 1) <= now:
            live = self._reservations[department]
            for rid in [rid for rid, (_, expires) in live.items() if expires <= now]:
                self._unhold(department, rid)
            if live:
                self._next_expiry[department] = min(expires for _, expires in live.values())
            else:
                del self._next_expiry[department]
        return self._reserved_total[department]

    async def commit(self, settlement: Settlement) -> CommitOutcome:
        dept = settlement.department
        self._unhold(dept, settlement.reservation_id)
        spent: list[int] = []
        for window in settlement.windows:
            key = (dept, window.wid)
            self._spent[key] += settlement.actual_nanos
            self._spent_expiry[key] = window.ends_at
            spent.append(self._spent[key])
        self._prune_windows(settlement.ts)
        minute, _ = rate_position(settlement.ts)
        if settlement.token_delta:
            self._rates[(dept, "tpm", minute)] += settlement.token_delta
        breaker = None
        if settlement.breaker_minutes is not None:
            buckets = self._breaker[dept]
            buckets[minute] = buckets.get(minute, 0) + settlement.actual_nanos
            breaker = self._breaker_sum(dept, minute, settlement.breaker_minutes)
        return CommitOutcome(tuple(spent), breaker)

    def drop_hold(self, department: str, reservation_id: str) -> bool:
        """A commit of nothing, without its work: free the hold (rates, windows and breaker
        are not changed by a request that cost nothing and used no more tokens)."""
        self._unhold(department, reservation_id)
        self._prune_windows(self._clock())
        return True

    def _prune_windows(self, now: float) -> None:
        """Forget budget windows a day past their end and rate minutes before the previous one.
        Reads only look at the current windows and minutes, so once per clock minute is enough."""
        current = rate_position(now)[0]
        if current == self._pruned_minute:
            return
        self._pruned_minute = current
        for key in [k for k, ends in self._spent_expiry.items() if ends + 86_400 < now]:
            del self._spent_expiry[key]
            self._spent.pop(key, None)
        for rate_key in [k for k in self._rates if k[2] < current - 1]:
            del self._rates[rate_key]

    def _breaker_sum(self, department: str, minute: int, window_minutes: int) -> int:
        buckets = self._breaker[department]
        for old in [m for m in buckets if m <= minute - window_minutes]:
            del buckets[old]
        return sum(buckets.values())

    async def resume(self, department: str) -> None:
        self._breaker.pop(department, None)

    async def breaker_spend(self, department: str, now: float, window_minutes: int) -> int:
        minute = int(now // 60)
        buckets = self._breaker.get(department, {})
        return sum(v for m, v in buckets.items() if minute - window_minutes < m <= minute)

    async def window_state(
        self, department: str, windows: tuple[Window, ...], now: float
    ) -> tuple[list[int], int]:
        reserved = self._purge_reservations(department, now)
        return [self._spent.get((department, w.wid), 0) for w in windows], reserved

    async def claim_notice(self, key: str, ttl_seconds: int) -> bool:
        now = self._clock()
        if self._notices.get(key, 0.0) > now:
            return False
        for stale in [k for k, expires in self._notices.items() if expires <= now]:
            del self._notices[stale]
        self._notices[key] = now + ttl_seconds
        return True

    async def release_notice(self, key: str) -> None:
        self._notices.pop(key, None)

    # ----- usage records ---------------------------------------------------------------------

    async def put_record(self, record: UsageRecord) -> None:
        if record.request_id not in self._records:
            self._gather(record)
        self._records[record.request_id] = record.packed()
        self._records.move_to_end(record.request_id)
        horizon = self._clock() - self._retention
        while self._records and (
            len(self._records) > self._max_records or self._oldest_ts() < horizon
        ):
            self._records.popitem(last=False)

    def _gather(self, record: UsageRecord) -> None:
        key = rollup_key(record)
        same = self._unrolled.get(key)
        if same is None:
            self._unrolled[key] = [record]
        else:
            same.append(record)
        self._unrolled_count += 1
        if self._unrolled_count >= ROLL_AFTER:
            self._roll_up()

    def _roll_up(self) -> None:
        """Add the gathered records to the rollups, arms and minutes: one addition per bucket
        for all records of a key, where rolling each record alone made one each."""
        if not self._unrolled_count:
            return
        unrolled, self._unrolled, self._unrolled_count = self._unrolled, {}, 0
        for key, records in unrolled.items():
            first, minute = records[0], key[-1]
            sums = usage_totals(records)
            starts = self._starts(minute)
            for detail in DETAILS:
                group = group_of(first, detail)
                for granularity, start in starts:
                    _add(self._rollups.setdefault((detail, granularity, start), {}), group, sums)
            arm = arm_key(first)
            arm_sums = arm_totals(records)
            for granularity, start in starts:
                _add(self._arms.setdefault((granularity, start), {}), arm, arm_sums)
            minutes = self._minutes.setdefault(starts[0][1], {})
            _add(minutes, (group_of(first, "coarse"), minute), sums)
        self._prune_rollups()

    def _starts(self, ts: float) -> tuple[tuple[Granularity, int], ...]:
        """(granularity, bucket start) of each granularity, hour first: the same for a whole
        hour, so worked out once an hour (the month's start goes through datetime)."""
        hour = bucket_start("h", ts)
        if hour != self._starts_hour:
            self._starts_hour = hour
            self._starts_of_hour = tuple((g, bucket_start(g, ts)) for g in GRANULARITIES)
        return self._starts_of_hour

    def _prune_rollups(self) -> None:
        now = self._clock()
        day = bucket_start("d", now)
        if day == self._pruned_day:
            return
        self._pruned_day = day
        horizon = now - self._retention - 31 * DAY  # a month bucket starts before its records
        for key in [k for k in self._rollups if k[2] < horizon]:
            del self._rollups[key]
        for bucket in [k for k in self._arms if k[1] < horizon]:
            del self._arms[bucket]
        for hour in [h for h in self._minutes if h < now - MINUTE_RETENTION]:
            del self._minutes[hour]

    async def minute_costs(self, hours: Iterable[int]) -> list[tuple[str, int, int]]:
        self._roll_up()
        costs: dict[tuple[str, int], int] = defaultdict(int)
        for hour in hours:
            for (group, minute), sums in self._minutes.get(hour, {}).items():
                costs[(group[0], minute)] += sums[4]
        return [(dept, minute, nanos) for (dept, minute), nanos in costs.items() if nanos]

    async def minute_rollups(self, hours: Iterable[int], department: str | None) -> list[Slice]:
        self._roll_up()
        return [Slice.of(minute, group, sums) for hour in hours
                for (group, minute), sums in self._minutes.get(hour, {}).items()
                if in_department(group, department)]

    async def arm_rollups(self, buckets: Iterable[tuple[ArmLevel, int]],
                          head: int = 0) -> list[ArmSlice]:
        """LEAN_DAY buckets read the day arms: in process they cost no transfer."""
        self._roll_up()
        days = (("d" if level == LEAN_DAY else level, start) for level, start in buckets)
        return [ArmSlice(start, key, tuple(sums[:head or None])) for granularity, start in days
                for key, sums in self._arms.get((granularity, start), {}).items()]

    async def rollups(
        self, buckets: Iterable[tuple[Granularity, int]], department: str | None,
        detail: Detail = "fine",
    ) -> list[Slice]:
        self._roll_up()
        found: list[Slice] = []
        for granularity, start in buckets:
            for group, sums in self._rollups.get((detail, granularity, start), {}).items():
                if in_department(group, department):
                    found.append(Slice.of(start, group, sums))
        return found

    async def recent_records(
        self, from_ts: float, to_ts: float, department: str | None, limit: int
    ) -> list[UsageRecord]:
        found: list[UsageRecord] = []
        for record in self._unpacked(reversed(self._records.items()), from_ts, to_ts):
            if len(found) == limit:
                break
            if department in (None, record.department):
                found.append(record)
        return sorted(found, key=lambda r: -r.ts)

    def _unpacked(self, items: Iterable[tuple[str, bytes]], from_ts: float, to_ts: float
                  ) -> Iterator[UsageRecord]:
        """The records of `items` with from_ts <= ts < to_ts; the others are not decoded."""
        for request_id, packed in items:
            if from_ts <= packed_ts(packed) < to_ts:
                yield UsageRecord.unpacked(request_id, packed)

    def _oldest_ts(self) -> float:
        return packed_ts(next(iter(self._records.values())))

    async def get_record(self, request_id: str) -> UsageRecord | None:
        packed = self._records.get(request_id)
        return UsageRecord.unpacked(request_id, packed) if packed is not None else None

    async def set_feedback(self, request_id: str, score: float, comment: str | None) -> bool:
        record = await self.get_record(request_id)
        if record is None:
            return False
        delta = quality_delta(record.quality_score, score)
        for granularity, start in self._starts(record.ts):  # added: in any order, before or
            # after the record's own sums are rolled up
            _add(self._arms.setdefault((granularity, start), {}), arm_key(record), delta)
        record.quality_score = score
        if comment is not None:
            record.extra = {**record.extra, "feedback_comment": comment}
        self._records[request_id] = record.packed()  # in its place: not a new put
        return True

    async def query_records(
        self, from_ts: float, to_ts: float, department: str | None
    ) -> list[UsageRecord]:
        found = [r for r in self._unpacked(self._records.items(), from_ts, to_ts)
                 if department is None or r.department == department]
        return sorted(found, key=lambda r: r.ts)

    def backlog_size(self) -> int:
        return 0

    async def flush(self) -> int:
        self._roll_up()
        return 0

    async def close(self) -> None:
        return None


def _add(bucket: dict[Any, list[int]], group: Any, sums: list[int]) -> None:
    total = bucket.get(group)
    bucket[group] = list(sums) if total is None else list(map(operator.add, total, sums))
