"""Reads of the usage records and rollups the Redis spend backend writes (key layout:
proxy.spend.redis_backend): rollup hashes in one Lua call each, records by time index. A base of
RedisSpendBackend, which sets the attributes declared here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.spend.budgets import BackendDown
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import (
    DETAILS,
    GRANULARITIES,
    LEAN_DAY,
    ArmKey,
    ArmLevel,
    ArmSlice,
    Detail,
    Granularity,
    Group,
    Slice,
    bucket_start,
    decode_arm_key,
    decode_group,
    decode_minute_field,
    in_department,
)

T = TypeVar("T")
THREAD_BYTES = 64 * 1024  # a rollup reply this long is parsed in a thread
# department-minute hours held between the alerts' polls (a two-day lookback is 49) and for how
# long at most: a replica of a version before CHANGES_FIELD adds to an hour without counting,
# so what such a replica writes during a rolling upgrade shows in the alerts within this time
MINUTE_HOURS_HELD = 64
MINUTES_HELD_S = 300.0
# ClusterError: a slot still moving after GatedCluster waited, or CLUSTERDOWN: not executed
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterError)


class RedisReads:
    """Key names, usage rollup reads and record queries of the Redis spend backend."""

    client: aioredis.Redis | RedisCluster
    prefix: str
    _roll: str
    _clock: Callable[[], float]
    _retention: float
    _read_rollups: AsyncScript
    _read_minutes: AsyncScript  # lua/minutes.lua
    _minute_hours: dict[int, tuple[str, float, list[tuple[str, int, int]]]]  # hour -> (changes,
    # monotonic time read, its costs): what minute_costs last read of each hour
    _lean_ready: bool  # the lean day rollups hold every record (LEAN_DAY)

    @property
    def _lean_marker(self) -> str:
        return f"{self._roll}backfilled:lean"

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except UNREACHABLE as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc

    def _record_key(self, request_id: str) -> str:
        return f"{self.prefix}rec:{request_id}"

    def _rollup_key(self, granularity: Granularity, start: int, detail: Detail = "fine") -> str:
        level = {"fine": "", "coarse": "c", "people": "p"}[detail]
        return f"{self._roll}{level}{granularity}:{start}"

    def _arm_key(self, granularity: ArmLevel, start: int) -> str:
        return f"{self._roll}a{granularity}:{start}"

    def _arm_keys(self, ts: float) -> list[str]:
        return [self._arm_key(g, bucket_start(g, ts)) for g in GRANULARITIES]

    def _minute_key(self, hour: int, level: str = "c") -> str:
        return f"{self._roll}{level}min:{hour}"

    def _rollup_keys(self, ts: float) -> list[str]:
        """Fine hour, day, month, then coarse, people, arms, coarse minutes, department minutes,
        the lean day arms, the department minutes' change count (record.lua's order)."""
        hour = bucket_start("h", ts)
        return [*(self._rollup_key(g, bucket_start(g, ts), d) for d in DETAILS
                  for g in GRANULARITIES), *self._arm_keys(ts),
                self._minute_key(hour), self._minute_key(hour, "d"),
                self._arm_key(LEAN_DAY, bucket_start("d", ts)), self._minute_key(hour, "v")]

    async def minute_rollups(self, hours: Iterable[int], department: str | None) -> list[Slice]:
        """Coarse usage per minute in these hours (their start, unix s)."""
        hours = list(hours)
        if not hours:
            return []
        keys = [self._minute_key(hour) for hour in hours]
        replies = orjson.loads(await self._call(self._read_rollups(keys=keys)))
        fields = [flat[i] for flat in replies for i in range(0, len(flat), 2)]
        found: list[Slice] = []
        for field, sums in zip(fields, _int_rows(replies), strict=True):
            group, minute = decode_minute_field(field)
            if in_department(group, department):
                found.append(Slice.of(minute, group, sums))
        return found

    async def minute_costs(self, hours: Iterable[int]) -> list[tuple[str, int, int]]:
        """(department, minute, nano-dollars) of these hours. The alerts ask for two days of
        minutes on every poll (~12,000 fields in the benchmark); an hour whose change count
        (its key `vmin:<hour>`) is the one read last time is not sent or parsed again: minutes.lua
        sends only the hours written since (the current one, or one a late batch reached)."""
        hours = list(hours)
        if not hours:
            return []
        mono = time.monotonic()
        held = self._minute_hours
        known = [held[h][0] if h in held and mono - held[h][1] < MINUTES_HELD_S else ""
                 for h in hours]
        keys = [key for hour in hours
                for key in (self._minute_key(hour, "d"), self._minute_key(hour, "v"))]
        reply = await self._call(self._read_minutes(keys=keys, args=known))
        fresh = await asyncio.to_thread(_minute_hashes, reply) if len(reply) >= THREAD_BYTES \
            else _minute_hashes(reply)
        found: list[tuple[str, int, int]] = []
        for hour, hashed in zip(hours, fresh, strict=True):
            if hashed is None:  # unchanged since it was held
                found += held[hour][2]
                continue
            changes, costs = hashed
            if changes:  # none: the hour has no hash yet
                held[hour] = (changes, mono, costs)
            else:
                held.pop(hour, None)
            found += costs
        if len(held) > 2 * MINUTE_HOURS_HELD:  # hours past the lookback: the oldest go
            for hour in sorted(held)[:-MINUTE_HOURS_HELD]:
                del held[hour]
        return found

    async def arm_rollups(self, buckets: Iterable[tuple[ArmLevel, int]],
                          head: int = 0) -> list[ArmSlice]:
        """Arm rollups of these buckets; LEAN_DAY buckets read the day arms instead until the
        lean rollups are complete (backfill_rollups builds them once per Redis)."""
        buckets = list(buckets)
        if not buckets:
            return []
        if not self._lean_ready and any(level == LEAN_DAY for level, _ in buckets):
            self._lean_ready = bool(await self._call(self.client.exists(self._lean_marker)))
            if not self._lean_ready:
                buckets = [("d" if level == LEAN_DAY else level, start)
                           for level, start in buckets]
        keys = [self._arm_key(granularity, start) for granularity, start in buckets]
        reply = await self._call(self._read_rollups(keys=keys, args=[head]))
        # a month of arm statistics is ~1 MB of JSON: decoded in a thread, so the event loop
        # keeps serving requests between the thread's GIL slices (chat p99 while the Spend page
        # polls, docs/benchmarks.md)
        return await asyncio.to_thread(_arm_slices, buckets, reply)

    async def rollups(
        self, buckets: Iterable[tuple[Granularity, int]], department: str | None,
        detail: Detail = "fine",
    ) -> list[Slice]:
        buckets = list(buckets)
        if not buckets:
            return []
        keys = [self._rollup_key(granularity, start, detail) for granularity, start in buckets]
        reply = await self._call(self._read_rollups(keys=keys))
        if len(reply) < THREAD_BYTES:
            return _usage_slices(buckets, reply, department)
        # the forecast's 57 days of hours: ~3,000 groups, parsed off the event loop
        return await asyncio.to_thread(_usage_slices, buckets, reply, department)

    async def recent_records(
        self, from_ts: float, to_ts: float, department: str | None, limit: int
    ) -> list[UsageRecord]:
        """The `limit` newest records with from_ts <= ts < to_ts, newest first."""
        index = f"{self.prefix}rec:ts" + (f":{department}" if department else "")
        ids = await self._call(self.client.zrevrangebyscore(
            index, f"({to_ts!r}", repr(from_ts), start=0, num=limit))
        if not ids:
            return []
        raws = await self._mget([self._record_key(as_text(i)) for i in ids])
        return [UsageRecord.from_dict(orjson.loads(raw)) for raw in raws if raw is not None]

    async def _mget(self, keys: list[str]) -> list[Any]:
        """MGET on a single Redis; per slot on a cluster (records spread over the slots)."""
        client = self.client
        if isinstance(client, RedisCluster):
            return list(await self._call(client.mget_nonatomic(keys)))
        return list(await self._call(client.mget(keys)))

    async def get_record(self, request_id: str) -> UsageRecord | None:
        raw = await self._call(self.client.get(self._record_key(request_id)))
        return None if raw is None else UsageRecord.from_dict(orjson.loads(raw))

    async def query_records(
        self, from_ts: float, to_ts: float, department: str | None
    ) -> list[UsageRecord]:
        index = f"{self.prefix}rec:ts" + (f":{department}" if department else "")
        ids = await self._call(self.client.zrangebyscore(index, repr(from_ts), f"({to_ts!r}"))
        found: list[UsageRecord] = []
        for start in range(0, len(ids), 500):
            keys = [self._record_key(as_text(rid)) for rid in ids[start : start + 500]]
            for raw in await self._mget(keys):
                if raw is not None:
                    found.append(UsageRecord.from_dict(orjson.loads(raw)))
        return found


def _minute_hashes(reply: bytes) -> list[tuple[str, list[tuple[str, int, int]]] | None]:
    """minutes.lua's reply: per hour None (unchanged), or its change count ('' when it has no
    hash) and its (department, minute, nano-dollars)."""
    found: list[tuple[str, list[tuple[str, int, int]]] | None] = []
    for hour in orjson.loads(reply):
        if hour == 0:
            found.append(None)
            continue
        changes, flat = hour
        costs = []
        for i in range(0, len(flat), 2):
            department, _, minute = flat[i].rpartition("\x1f")
            costs.append((department, int(minute), int(flat[i + 1])))
        found.append((changes, costs))
    return found


def _usage_slices(buckets: list[tuple[Granularity, int]], reply: bytes,
                  department: str | None) -> list[Slice]:
    replies = orjson.loads(reply)
    rows = iter(_int_rows(replies))
    groups: dict[str, Group] = {}  # the same group in every bucket: decoded once
    found: list[Slice] = []
    for (_, start), flat in zip(buckets, replies, strict=True):
        for i in range(0, len(flat), 2):  # an empty hash comes as {}: len 0
            sums = next(rows)
            group = groups.get(flat[i])
            if group is None:
                group = groups[flat[i]] = decode_group(flat[i])
            if in_department(group, department):
                found.append(Slice(start, group, *sums))
    return found


def _arm_slices(buckets: list[tuple[ArmLevel, int]], reply: bytes) -> list[ArmSlice]:
    replies = orjson.loads(reply)
    keyed = [(start, flat[i]) for (_, start), flat in zip(buckets, replies, strict=True)
             for i in range(0, len(flat), 2)]
    # the same arm comes back once per bucket: each field decoded once (a month of days in the
    # benchmark: 7,200 fields, ~1,400 arms)
    arms: dict[str, ArmKey] = {}
    for _, field in keyed:
        if field not in arms:
            arms[field] = decode_arm_key(field)
    return [ArmSlice(start, arms[field], sums)
            for (start, field), sums in zip(keyed, _int_rows(replies), strict=True)]


def _int_rows(replies: list[list[str]]) -> list[tuple[int, ...]]:
    """The comma-separated sums of every field in rollup replies, parsed by one orjson call
    instead of split() and int() per number (a month of arm statistics is ~1,400 fields x 47
    numbers in the benchmark's data)."""
    rows = [flat[i] for flat in replies for i in range(1, len(flat), 2)]
    if not rows:
        return []
    return [tuple(row) for row in orjson.loads("[[" + "],[".join(rows) + "]]")]


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
