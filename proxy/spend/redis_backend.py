"""Redis spend backend: budgets, rates and breaker via Lua (one round trip each), records as JSON.

This is the per-request design (MET_SPEND_LEASES=0); by default proxy.spend.leases builds on it
with budget/rate leases and batched writes (lease.lua, batch.lua), on the same keys plus
  P{D}:n:lease:<replica id>                   the last seq of a replica's lease calls (expires)
its leases being two reservations in P{D}:n:resv: lease:<replica id> (the free part, expires with
the lease TTL) and lease:<replica id>:held (its holds of requests in flight, expire with them).

Keys (P = key prefix, D = department, in a {D} hash tag so each script touches one slot):
  P{D}:n:resv, P{D}:n:resv:amt, P{D}:n:resv:total   live reservations (expire; a dead replica's
                                              holds are purged by the next admit after expires_at)
  P{D}:n:spent:<window>                       nano-dollars spent in an hour/day/month window
  P{D}:rpm:<minute>, P{D}:tpm:<minute>        sliding-window rate counters
  P{D}:n:cb                                   circuit breaker: minute -> nano-dollars
Money keys carry the unit (`n:` = nano-dollars). The same names without it hold micro-dollars,
written by versions before nano-dollars: the scripts fold them (x 1000, exactly) into the `n:` keys
the first time they touch a department's window or breaker, reads add them, and holds still open
there count (x 1000) until they expire, so an upgrade (even a rolling one) keeps every budget.
  Pnotice:...                                 notice dedupe (SET NX EX until the window ends)
  Prec:<request_id>, Prec:ts, Prec:ts:<D>     usage records (JSON, TTL = retention) + time indexes
  Proll:{h,d,m}:<hour/day/month start>        rollups (proxy.spend.rollups): group -> sums, written
  Proll:c{h,d,m}:<start>, Proll:p{h,d,m}:...  with the record by one script (TTL = retention +
                                              32 d); `c`: department x model, `p`: x key x user
  Proll:a{h,d,m}:<start>                      arm statistics (rollups.arm_sums), same script, TTL;
  Proll:cmin:<hour start>                     coarse group + minute -> sums (TTL MINUTE_RETENTION)
  Proll:dmin:<hour start>                     department + minute -> nano-dollars (TTL the same)
  Proll:vmin:<hour start>                     n: the number of writes to dmin (lua/minutes.lua)
                                              a feedback score adds its change (feedback.lua)
  Proll:filled, Proll:backfilled              records added to rollups by the upgrade backfill; done
  Proll:filled:arms, Proll:backfilled:arms    the same for the arm rollups
  Proll:al:<day start>                        lean day arms (rollups.lean_key: department x model
                                              x provider x task, ARM_HEAD sums), same script, TTL
  Proll:backfilled:lean                       lean day arms built from the day arms (lean.lua)
On a single Redis a record, its two time indexes and its rollups are written by one script
(record.lua). On a cluster those keys live in different slots (CROSSSLOT for one script), so the
rollups carry the time index's name as a hash tag, `P{Prec:ts}:roll:...`, and share its slot: the
record and its department index are written first (one pipeline), then the script adds the record
to Prec:ts and its rollups atomically in that one slot. Records still spread over every master;
Prec:ts was already one slot (the hot key of docs/scaling.md), now with its rollups.
When Redis is unreachable, settlements and records are queued here and written by flush()."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import WatchError

from proxy.spend.budgets import (
    AdmitOutcome,
    AdmitPlan,
    BackendDown,
    CommitOutcome,
    Settlement,
    Window,
    breaker_retry_after,
    rate_position,
    sliding_retry_after,
)
from proxy.spend.pricing import NANOS_PER_MICRO
from proxy.spend.records import UsageRecord
from proxy.spend.redis_reads import RedisReads, as_text
from proxy.spend.rollups import (
    ARM_HEAD,
    CHANGES_FIELD,
    DAY,
    DETAILS,
    GRANULARITIES,
    LEAN_DAY,
    MINUTE_RETENTION,
    arm_key,
    arm_sums,
    arm_totals,
    bucket_start,
    encode_arm_key,
    encode_group,
    group_of,
    lean_key,
    lean_sums,
    minute_field,
    quality_delta,
    sums_of,
    usage_totals,
)

log = logging.getLogger(__name__)
_LUA = Path(__file__).parent / "lua"


def _script(name: str, helpers: str = "fold.lua") -> str:
    """A Lua script with the shared helpers it uses (Redis scripts cannot include files)."""
    return (_LUA / helpers).read_text() + (_LUA / name).read_text()
# the "rollup" mark in a record's JSON: 1 = in the usage rollups, 2 = in the arm rollups too
ROLLUP_VERSION = 2
_STATUS = {0: "ok", 1: "budget", 2: "rpm", 3: "tpm", 4: "breaker"}


class RedisSpendBackend(RedisReads):
    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        prefix: str,
        clock: Callable[[], float],
        retention_seconds: float,
        backlog_max_records: int,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._clock = clock
        self._retention = retention_seconds
        self._owns_client = owns_client
        # on a cluster a record and its two time indexes live in different slots: written in
        # one pipeline, not one transaction (a reader skips an index entry without a record)
        self._cluster = isinstance(client, RedisCluster)
        # rollups share Prec:ts's slot on a cluster (a prefix with its own {tag} already puts
        # every key in one slot)
        tagged = self._cluster and "{" not in prefix
        self._roll = f"{prefix}{{{prefix}rec:ts}}:roll:" if tagged else f"{prefix}roll:"
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._record = client.register_script(_script("record.lua", "add_sums.lua"))
        self._feedback = client.register_script(_script("feedback.lua", "add_sums.lua"))
        self._read_rollups = client.register_script((_LUA / "rollups.lua").read_text())
        self._read_minutes = client.register_script((_LUA / "minutes.lua").read_text())
        self._minute_hours: dict[int, tuple[str, float, list[tuple[str, int, int]]]] = {}
        self._build_lean = client.register_script((_LUA / "lean.lua").read_text())
        self._lean_ready = False
        self._pending_settlements: collections.deque[Settlement] = collections.deque()
        self._pending_records: collections.deque[UsageRecord] = collections.deque(
            maxlen=backlog_max_records
        )
        self.dropped_records = 0

    def _dept(self, department: str, suffix: str) -> str:
        return f"{self.prefix}{{{department}}}:{suffix}"

    def _resv_keys(self, department: str) -> list[str]:
        base = ("n:resv", "n:resv:amt", "n:resv:total", "n:cb")
        return [self._dept(department, name) for name in base]

    def _spent_keys(self, department: str, windows: Iterable[Window]) -> list[str]:
        return [self._dept(department, f"n:spent:{w.wid}") for w in windows]

    def _legacy_keys(self, department: str, windows: Iterable[Window]) -> list[str]:
        """The micro-dollar keys of older versions: reserved total, breaker, spent per window."""
        return [self._dept(department, "resv:total"), self._dept(department, "cb"),
                *(self._dept(department, f"spent:{w.wid}") for w in windows)]

    # ----- budgets, rates, breaker -----------------------------------------------------------

    async def admit(self, plan: AdmitPlan) -> AdmitOutcome:
        dept = plan.department
        minute, elapsed = rate_position(plan.now)
        keys = [
            *self._resv_keys(dept),
            self._dept(dept, f"rpm:{minute}"), self._dept(dept, f"rpm:{minute - 1}"),
            self._dept(dept, f"tpm:{minute}"), self._dept(dept, f"tpm:{minute - 1}"),
            *self._spent_keys(dept, plan.windows), *self._legacy_keys(dept, plan.windows),
        ]  # fmt: skip
        breaker = plan.breaker
        args: list[Any] = [
            plan.reservation_id, repr(plan.now), repr(plan.expires_at), plan.fixed_nanos,
            repr(plan.per_token_nanos), plan.max_tokens, plan.min_tokens, int(plan.cap),
            -1 if plan.rpm is None else plan.rpm, -1 if plan.tpm is None else plan.tpm,
            plan.tokens, repr(elapsed), breaker.window_minutes if breaker else 0,
            breaker.max_nanos if breaker else 0, minute,
            *(w.limit_nanos for w in plan.windows),
        ]  # fmt: skip
        reply = await self._call(self._admit(keys=keys, args=args))
        return self._outcome(plan, reply, elapsed)

    def _outcome(self, plan: AdmitPlan, reply: list[Any], elapsed: float) -> AdmitOutcome:
        status = _STATUS[int(reply[0])]
        if status == "ok":
            capped = int(reply[2])
            return AdmitOutcome("ok", int(reply[1]), None if capped < 0 else capped)
        if status == "budget":
            return AdmitOutcome("budget", failing=tuple(int(i) for i in reply[3]))
        if status == "breaker" and plan.breaker is not None:
            buckets = [int(b) for b in reply[4]]
            retry = breaker_retry_after(
                buckets, int(reply[3]), plan.breaker.window_minutes, plan.breaker.max_nanos,
                plan.now,
            )  # fmt: skip
            return AdmitOutcome("breaker", retry_after=retry)
        limit = plan.rpm if status == "rpm" else plan.tpm
        cost = 1 if status == "rpm" else plan.tokens
        retry = sliding_retry_after(int(reply[1]), int(reply[2]), elapsed, cost, limit or 0)
        return AdmitOutcome(status, retry_after=retry)  # type: ignore[arg-type]

    def drop_hold(self, department: str, reservation_id: str) -> bool:
        """Holds live in Redis, freed by the settle script: the ledger commits nothing."""
        return False

    async def commit(self, settlement: Settlement) -> CommitOutcome | None:
        try:
            return await self._commit(settlement)
        except BackendDown as exc:
            log.warning("Redis down; queueing settlement of %s: %s", settlement.department, exc)
            self._pending_settlements.append(settlement)
            return None

    async def _commit(self, settlement: Settlement, resent: bool = False) -> CommitOutcome:
        """Run the settle script; `resent` for a settlement from the backlog, which Redis may
        already have run before the connection broke (the script then leaves the spend alone)."""
        dept = settlement.department
        now = self._clock()
        live = [w for w in settlement.windows if w.ttl(now) > 0]
        minute, _ = rate_position(settlement.ts)
        keys = [
            *self._resv_keys(dept), self._dept(dept, f"tpm:{minute}"),
            *self._spent_keys(dept, live), *self._legacy_keys(dept, live)[1:],
        ]  # fmt: skip
        guard = settlement.held_until if resent and settlement.held_until is not None else 0
        args: list[Any] = [
            settlement.reservation_id, settlement.actual_nanos, settlement.breaker_minutes or 0,
            minute, settlement.token_delta, guard, now, *(w.ttl(now) for w in live),
        ]  # fmt: skip
        breaker, spent, settled_now = await self._call(self._settle(keys=keys, args=args))
        if not int(settled_now):
            log.info("settlement %s was already in Redis; not counted again",
                     settlement.reservation_id)
        by_window = dict(zip((w.wid for w in live), (int(s) for s in spent), strict=True))
        after = tuple(by_window.get(w.wid, settlement.actual_nanos) for w in settlement.windows)
        return CommitOutcome(after, None if int(breaker) < 0 else int(breaker))

    async def resume(self, department: str) -> None:
        await self._call(self.client.delete(*self._resv_keys(department)[3:],
                                            self._legacy_keys(department, ())[1]))

    async def breaker_spend(self, department: str, now: float, window_minutes: int) -> int:
        minute = int(now // 60)
        fields = [str(m) for m in range(minute - window_minutes + 1, minute + 1)]
        legacy = self._legacy_keys(department, ())[1]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._resv_keys(department)[3], fields)
            pipe.hmget(legacy, fields)
            nanos, micros = await self._call(pipe.execute())
        return _sum(nanos) + _sum(micros) * NANOS_PER_MICRO

    async def window_state(
        self, department: str, windows: tuple[Window, ...], now: float
    ) -> tuple[list[int], int]:
        live, amount_by_id, legacy_held, spent = await self._read_windows(department, windows)
        reserved = sum(int(amount_by_id.get(rid, 0)) for rid, expires in live if expires > now)
        return spent, reserved + legacy_held

    async def _read_windows(self, department: str, windows: tuple[Window, ...]
                            ) -> tuple[list[Any], dict[Any, Any], int, list[int]]:
        """One transaction: the reservations (id, expiry), their amounts, what older versions
        hold (nano-dollars) and the spend of each window (nano-dollars, older micro-dollar keys
        folded in)."""
        zset, amounts, _, _ = self._resv_keys(department)
        legacy_total, _, *legacy_spent = self._legacy_keys(department, windows)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrangebyscore(zset, "-inf", "+inf", withscores=True)
            pipe.hgetall(amounts)
            pipe.get(legacy_total)
            for key in (*self._spent_keys(department, windows), *legacy_spent):
                pipe.get(key)
            live, amount_by_id, legacy_held, *values = await self._call(pipe.execute())
        nanos, micros = values[: len(windows)], values[len(windows):]
        spent = [int(n or 0) + int(m or 0) * NANOS_PER_MICRO for n, m in zip(nanos, micros,
                                                                             strict=True)]
        return live, amount_by_id, max(0, int(legacy_held or 0)) * NANOS_PER_MICRO, spent

    async def claim_notice(self, key: str, ttl_seconds: int) -> bool:
        claim = self.client.set(self.prefix + key, "1", nx=True, ex=ttl_seconds)
        return bool(await self._call(claim))

    async def release_notice(self, key: str) -> None:
        await self._call(self.client.delete(self.prefix + key))

    # ----- usage records ---------------------------------------------------------------------

    async def put_record(self, record: UsageRecord) -> None:
        try:
            await self._put_record(record)
        except BackendDown as exc:
            log.warning("Redis down; queueing usage record %s: %s", record.request_id, exc)
            if len(self._pending_records) == self._pending_records.maxlen:
                self.dropped_records += 1
            self._pending_records.append(record)

    def _rollup_fields(self, record: UsageRecord) -> tuple[str, str, str, str]:
        """(fine group, sums, coarse group, people group) as the scripts take them."""
        return (encode_group(group_of(record)), ",".join(map(str, sums_of(record))),
                encode_group(group_of(record, "coarse")), encode_group(group_of(record, "people")))

    def rollup_parts(self, records: Sequence[UsageRecord]
                     ) -> list[tuple[str, int, str, list[int]]]:
        """Every rollup hash records of one rollup_key() add to, as (key, TTL, field, sums):
        what record.lua writes one record at a time, summed (batch.lua takes a flush window's
        parts summed per hash and field). The moments' squares are summed before they are
        split into limbs (rollups.arm_totals)."""
        first = records[0]
        keys = self._rollup_keys(first.ts)
        ttl = self._rollup_ttl
        sums = usage_totals(records)
        parts = [(keys[3 * level + g], ttl, encode_group(group_of(first, detail)), sums)
                 for level, detail in enumerate(DETAILS) for g in range(len(GRANULARITIES))]
        arm, arm_row = encode_arm_key(arm_key(first)), arm_totals(records)
        parts += [(keys[9 + g], ttl, arm, arm_row) for g in range(len(GRANULARITIES))]
        parts.append((keys[12], MINUTE_RETENTION,
                      minute_field(group_of(first, "coarse"), first.ts), sums))
        costed = [r.cost_nanos for r in records if r.cost_nanos]
        if costed:
            parts.append((keys[13], MINUTE_RETENTION,
                          minute_field((first.department,), first.ts), [sum(costed)]))
            parts.append((keys[15], MINUTE_RETENTION, CHANGES_FIELD, [len(costed)]))  # minutes
        parts.append((keys[14], ttl, encode_arm_key(lean_key(first)), arm_row[:len(ARM_HEAD)]))
        return parts

    async def _put_record(self, record: UsageRecord) -> None:
        horizon = self._clock() - self._retention
        keys, args = self._rollup_call(record, f"{self.prefix}rec:ts", horizon)
        key = self._record_key(record.request_id)
        by_dept = f"{self.prefix}rec:ts:{record.department}"
        if self._cluster:  # other slots: written first, the script then indexes and counts it
            payload, ttl = args[8], args[9]
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(key, payload, ex=ttl)
                pipe.zadd(by_dept, {record.request_id: record.ts})
                pipe.zremrangebyscore(by_dept, "-inf", f"({horizon!r}")
                await self._call(pipe.execute())
        else:
            keys += [key, by_dept]
        await self._call(self._record(keys=keys, args=args))

    def _rollup_call(self, record: UsageRecord, seen: str, horizon: float,
                     arms_only: bool = False) -> tuple[list[str], list[Any]]:
        """record.lua's keys (without the record's own two) and arguments; `arms_only` for a
        record already in the usage rollups (written by a version without arm and minute
        rollups): it joins those two only."""
        fine, sums, coarse, people = self._rollup_fields(record)
        if arms_only:
            fine = coarse = people = ""
        args: list[Any] = [
            record.request_id, repr(record.ts), f"({horizon!r}", fine, sums,
            self._rollup_ttl, coarse, people,
            orjson.dumps({**record.to_dict(), "rollup": ROLLUP_VERSION}),
            max(1, int(self._retention)), encode_arm_key(arm_key(record)),
            ",".join(map(str, arm_sums(record))),
            minute_field(group_of(record, "coarse"), record.ts), MINUTE_RETENTION,
            minute_field((record.department,), record.ts), record.cost_nanos,
            encode_arm_key(lean_key(record)), ",".join(map(str, lean_sums(record))),
        ]  # fmt: skip
        return [seen, *self._rollup_keys(record.ts)], args

    @property
    def _rollup_ttl(self) -> int:
        return int(self._retention) + 32 * DAY

    async def backfill_rollups(self, batch: int = 1000) -> int:
        """_backfill_records, then the lean day rollups of the days before they existed."""
        added = await self._backfill_records(batch)
        await self._backfill_lean()
        return added

    async def _backfill_lean(self) -> None:
        """Build each retained day's lean rollup from its arm rollup (lean.lua: exact whatever
        was written before; safe on several replicas at once), then mark them complete. Replicas
        of a version without lean rollups still writing afterwards are not in them."""
        if await self._call(self.client.exists(self._lean_marker)):
            self._lean_ready = True
            return
        today = bucket_start("d", self._clock())
        for day in range(today - self._rollup_ttl // DAY * DAY, today + DAY, DAY):
            keys = [self._arm_key("d", day), self._arm_key(LEAN_DAY, day)]
            await self._call(self._build_lean(keys=keys, args=[self._rollup_ttl, len(ARM_HEAD)]))
        await self._call(self.client.set(self._lean_marker, "1"))
        self._lean_ready = True

    async def _backfill_records(self, batch: int) -> int:
        """Add the records written before rollups existed (no "rollup" mark in their JSON) to
        them, and those written before arm rollups existed ("rollup":1) to the arm rollups,
        once per Redis: the `filled` and `filled:arms` sets say which are counted (safe on
        several replicas at once), the `backfilled` and `backfilled:arms` markers that it is
        done. Returns how many records were added."""
        marker, usage_done = f"{self._roll}backfilled:arms", f"{self._roll}backfilled"
        if await self._call(self.client.exists(marker)):
            return 0
        usage_filled = bool(await self._call(self.client.exists(usage_done)))
        index, added, offset = f"{self.prefix}rec:ts", 0, 0
        horizon = self._clock() - self._retention
        while True:
            ids = await self._call(self.client.zrange(index, offset, offset + batch - 1))
            if not ids:
                break
            offset += len(ids)
            raws = await self._mget([self._record_key(as_text(i)) for i in ids])
            calls = [self._backfill_call(raw, usage_filled, horizon) for raw in raws
                     if raw is not None and b'"rollup":2' not in raw]
            added += await self._run_records(calls)
        for done, guard in ((usage_done, "filled"), (marker, "filled:arms")):
            await self._call(self.client.set(done, "1"))
            # not deleted: a replica still backfilling would count again what it no longer
            # finds; past the retention the records it guards have expired too
            await self._call(self.client.expire(f"{self._roll}{guard}",
                                                max(1, int(self._retention))))
        return added

    def _backfill_call(self, raw: bytes, usage_filled: bool,
                       horizon: float) -> tuple[list[str], list[Any]]:
        record = UsageRecord.from_dict(orjson.loads(raw))
        if usage_filled or b'"rollup":1' in raw:  # in the usage rollups already
            return self._rollup_call(record, f"{self._roll}filled:arms", horizon, True)
        return self._rollup_call(record, f"{self._roll}filled", horizon)

    async def _run_records(self, calls: list[tuple[list[str], list[Any]]]) -> int:
        """record.lua for each call: one pipeline on a single Redis; concurrent calls on a
        cluster (a cluster pipeline queues EVALSHA without loading the script on the node)."""
        client = self.client
        if isinstance(client, RedisCluster):
            replies = await self._call(asyncio.gather(
                *(self._record(keys=keys, args=args) for keys, args in calls)))
            return sum(int(r) for r in replies)
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._record(keys=keys, args=args, client=pipe)
            return sum(int(r) for r in await self._call(pipe.execute()))

    async def set_feedback(self, request_id: str, score: float, comment: str | None) -> bool:
        """Store the score on the record, then its change in the record's arm rollups (right
        after, not in the same transaction: on a cluster they live in another slot)."""
        key = self._record_key(request_id)
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    before = await self._call(self._write_feedback(pipe, key, score, comment))
                    break
                except WatchError:
                    continue
        if before is None:
            return False
        if before.get("rollup") == ROLLUP_VERSION:  # else the backfill counts the new score
            record = UsageRecord.from_dict(before)
            delta = quality_delta(record.quality_score, score)
            await self._call(self._feedback(
                keys=self._arm_keys(record.ts),
                args=[encode_arm_key(arm_key(record)), ",".join(map(str, delta)),
                      self._rollup_ttl]))
        return True

    async def _write_feedback(self, pipe: Any, key: str, score: float,
                              comment: str | None) -> dict[str, Any] | None:
        """The record's JSON before the change (None: no such record)."""
        await pipe.watch(key)
        raw = await pipe.get(key)
        if raw is None:
            await pipe.unwatch()
            return None
        before: dict[str, Any] = orjson.loads(raw)
        data = {**before, "quality_score": score}
        if comment is not None:
            data["extra"] = {**data.get("extra", {}), "feedback_comment": comment}
        pipe.multi()
        pipe.set(key, orjson.dumps(data), keepttl=True)
        await pipe.execute()
        return before

    # ----- backlog ---------------------------------------------------------------------------

    def backlog_size(self) -> int:
        return len(self._pending_settlements) + len(self._pending_records)

    async def flush(self) -> int:
        """Write queued settlements then records, oldest first; stop at the first failure."""
        written = 0
        try:
            while self._pending_settlements:
                await self._commit(self._pending_settlements[0], resent=True)
                self._pending_settlements.popleft()
                written += 1
            while self._pending_records:
                await self._put_record(self._pending_records[0])
                self._pending_records.popleft()
                written += 1
        except BackendDown as exc:
            log.warning("Redis still down; %d items queued: %s", self.backlog_size(), exc)
        return written

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _sum(values: Iterable[Any]) -> int:
    return sum(int(v) for v in values if v is not None)
