"""The ledger's usage records (get, rate, query) and reads of usage: the rollups (month, day,
hour, minute, arms), the raw records of the edges no rollup covers, and the reports built from
them (spend by dimension, chargeback).
A base of proxy.spend.ledger.Ledger, which sets the attributes declared here."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.spend.budgets import (
    BackendDown,
    SpendBackend,
    SpendBackendUnavailable,
    SpendDimension,
)
from proxy.spend.chargeback import Chargeback, build_chargeback
from proxy.spend.pricing import nanos_to_dollars
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import (
    ARM_HEAD,
    DAY,
    HOUR,
    LEAN_DAY,
    ArmSlice,
    Detail,
    Granularity,
    Slice,
    bucket_start,
    group_of,
    plan_range,
    split_edge,
    sums_of,
)

log = logging.getLogger("proxy.spend.ledger")  # the ledger's log, as before the split
T = TypeVar("T")


class UsageReads:
    """Usage over a range from rollups and edge records, and the reports made of it."""

    backend: SpendBackend
    _clock: Callable[[], float]

    async def get_record(self, request_id: str) -> UsageRecord | None:
        return await self._guard(self.backend.get_record(request_id))

    async def set_feedback(self, request_id: str, score: float, comment: str | None = None) -> bool:
        return await self._guard(self.backend.set_feedback(request_id, score, comment))

    async def records(
        self, from_ts: float, to_ts: float, department: str | None = None
    ) -> list[UsageRecord]:
        """Records with from_ts <= ts < to_ts, oldest first."""
        return await self._guard(self.backend.query_records(from_ts, to_ts, department))

    async def usage(
        self, from_ts: float, to_ts: float, department: str | None = None,
        detail: Detail = "fine", coarsest: Granularity = "m",
    ) -> list[Slice]:
        """Usage over [from_ts, to_ts) from the month, day and hour rollups, and the raw records
        of the edges no whole hour covers: O(buckets x groups), not O(records). `coarse`:
        department x model groups only; `coarsest="d"`: no slice spans more than a UTC day."""
        now = self._clock()
        plan = plan_range(from_ts, to_ts, now, coarsest)
        found = await self._guard(self.backend.rollups(plan.buckets, department, detail))
        for start, end in plan.raw:
            minutes, raw = split_edge(start, end, now) if detail == "coarse" \
                else (None, [(start, end)])
            if minutes is not None:
                found += await self.minutes(*minutes, department)
            for first, last in raw:
                records = await self._guard(self.backend.query_records(first, last, department))
                found.extend(Slice.of(r.ts, group_of(r, detail), sums_of(r)) for r in records)
        return found

    async def minutes(self, from_ts: int, to_ts: int, department: str | None = None
                      ) -> list[Slice]:
        """Coarse usage per minute over whole minutes [from_ts, to_ts), from the minute rollups
        (kept MINUTE_RETENTION)."""
        hours = range(bucket_start("h", from_ts), to_ts, HOUR)
        found = await self._guard(self.backend.minute_rollups(hours, department))
        return [part for part in found if from_ts <= part.start < to_ts]

    async def minute_costs(self, from_ts: int, to_ts: int) -> list[tuple[str, int, int]]:
        """(department, minute start, nano-dollars spent) for whole minutes [from_ts, to_ts)
        with spend, from the per-department minute rollups."""
        hours = range(bucket_start("h", from_ts), to_ts, HOUR)
        found = await self._guard(self.backend.minute_costs(hours))
        return [cost for cost in found if from_ts <= cost[1] < to_ts]

    async def arm_usage(
        self, from_ts: float, to_ts: float, coarsest: Granularity = "m",
        department: str | None = None, head: int = 0,
    ) -> list[ArmSlice]:
        """Arm statistics (proxy.spend.rollups.arm_sums) over whole UTC hours: `from_ts` rounded
        down, `to_ts` up to the hour, so no raw record is read. `coarsest="h"`: one slice per
        hour with traffic (for rates over the hours a model was used). `head`: only the first
        `head` sums (ARM_HEAD) of each slice, for readers that need no statistics."""
        start, end = math.floor(from_ts / HOUR) * HOUR, math.ceil(to_ts / HOUR) * HOUR
        plan = plan_range(start, end, self._clock(), coarsest)
        found = await self._guard(self.backend.arm_rollups(plan.buckets, head))
        return [p for p in found if department in (None, p.department)]

    async def daily_usage(self, from_ts: float, to_ts: float, department: str | None = None
                          ) -> list[ArmSlice]:
        """The daily series' input over whole UTC days (`from_ts` rounded down, `to_ts` up):
        ARM_HEAD sums per day x department x model x provider x task, from the lean day
        rollups (LEAN_DAY: ~100 groups a day where the day arms have ~1,400)."""
        start, end = math.floor(from_ts / DAY) * DAY, math.ceil(to_ts / DAY) * DAY
        plan = plan_range(start, end, self._clock(), "d")
        buckets = [(LEAN_DAY if level == "d" else level, first) for level, first in plan.buckets]
        found = await self._guard(self.backend.arm_rollups(buckets, len(ARM_HEAD)))
        return [p for p in found if department in (None, p.department)]

    async def recent(
        self, from_ts: float, to_ts: float, department: str | None = None, limit: int = 20
    ) -> list[UsageRecord]:
        """The newest `limit` records in [from_ts, to_ts), newest first."""
        return await self._guard(self.backend.recent_records(from_ts, to_ts, department, limit))

    async def spend_by(
        self, dimension: SpendDimension, from_ts: float, to_ts: float, department: str | None = None
    ) -> dict[str, float]:
        """Dollars per department / key id / user / model (used) over [from_ts, to_ts)."""
        totals: dict[str, int] = defaultdict(int)
        detail: Detail = "people" if dimension in ("key", "user") else "coarse"
        for part in await self.usage(from_ts, to_ts, department, detail):
            totals[dimension_value(part, dimension)] += part.cost_nanos
        return {name: nanos_to_dollars(nanos) for name, nanos in sorted(totals.items())}

    async def chargeback(
        self, from_ts: float, to_ts: float, department: str | None = None
    ) -> Chargeback:
        return build_chargeback(await self.usage(from_ts, to_ts, department, "coarse", "d"))

    async def _guard(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except BackendDown as exc:
            raise unavailable(exc) from exc


def unavailable(exc: BackendDown) -> SpendBackendUnavailable:
    """The client hears that budgets can't be checked; the cause (which names Redis's address)
    goes to the log only."""
    log.warning("spend backend unreachable: %s", exc)
    return SpendBackendUnavailable(
        "spend backend unreachable: budgets can't be checked right now. Retry shortly.")


def dimension_value(record: Slice, dimension: SpendDimension) -> str:
    if dimension == "department":
        return record.department
    if dimension == "key":
        return record.key_id
    if dimension == "user":
        return record.user or "(none)"
    return record.model_used
