"""Usage records written in batches (proxy.spend.leases): a replica queues each record and its
flusher writes the queue every flush window with one MULTI (lua/batch.lua indexes them and adds
their rollup deltas, summed per hash and field)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from proxy.spend.budgets import BackendDown
from proxy.spend.records import UsageRecord
from proxy.spend.redis_backend import _LUA, ROLLUP_VERSION, RedisSpendBackend
from proxy.spend.rollups import bucket_start, rollup_key

log = logging.getLogger(__name__)
BATCH_RECORDS = 256  # records per batch script call
PRUNE_EVERY_S = 1.0  # how often a batch also drops index entries past the retention
EXPIRE_EVERY_S = 600.0  # how often a batch refreshes a rollup hash's TTL (retention + 32 days)
ISOLATE_AFTER = 3  # a batch Redis refused this often (not unreachable): records one by one
RETRY_DOWN_S = 1.0  # while Redis is unreachable or refuses, the flusher tries (and logs) this often


class BatchedRecordsBackend(RedisSpendBackend):
    """RedisSpendBackend whose records are queued and written in batches by a subclass's
    flusher (`_flush_records`), which `_wake_flusher` starts."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str,
                 clock: Callable[[], float], retention_seconds: float, backlog_max_records: int,
                 owns_client: bool = False) -> None:
        super().__init__(client, prefix=prefix, clock=clock, retention_seconds=retention_seconds,
                         backlog_max_records=backlog_max_records, owns_client=owns_client)
        self._batch = client.register_script((_LUA / "batch.lua").read_text())
        self._records: deque[UsageRecord] = deque()
        self._max_records = backlog_max_records
        self._records_lock = asyncio.Lock()
        self._keys_hour, self._keys_of_hour = -1, list[str]()
        self._rollup_expiry: dict[int, float] = {}  # rollup hour -> monotonic time TTLs set
        self._pruned = -math.inf
        self._batch_loaded = False
        self._record_failures = 0  # times in a row Redis refused the head batch of records
        self._record_error_logged = -math.inf  # monotonic

    def _wake_flusher(self) -> None:
        """Start (or wake) the flusher that writes the queue: the subclass's."""

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
        same: dict[tuple[Any, ...], list[UsageRecord]] = defaultdict(list)
        for record in records:
            same[rollup_key(record)].append(record)
            rows += [record.request_id, repr(record.ts)]
        for group in same.values():  # most of a window's records share a few keys
            for key, ttl, name, sums in self.rollup_parts(group):
                fields = hashes.setdefault(key, (ttl, {}))[1]
                total = fields.get(name)
                if total is None:
                    fields[name] = list(sums)
                else:
                    _add_into(total, sums)
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


def _add_into(total: list[int], sums: list[int]) -> None:
    """Add `sums` to `total` element by element (a shorter row counts as zeros)."""
    for k, value in enumerate(sums):
        if k < len(total):
            total[k] += value
        else:
            total.append(value)
