"""Usage rollups: per UTC hour, day and month x (department, key, user, model, route, experiment
arm), the sums a spend report needs, kept up to date as each record is written.

A report over a range reads whole months, days and hours from their rollups and only the uncovered
edges (a `from` or `to` inside an hour) from the raw records, so a month costs O(groups) and any
range O(buckets x groups) instead of decoding every record. Sums are integers (tokens,
nano-dollars), so a report from rollups equals the same report from the records exactly."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from proxy.spend.records import UsageRecord

MINUTE = 60
HOUR = 3600
DAY = 86_400
# coarse (department x model) rollups per minute, one hash per hour: the edges of a range inside
# an hour and the spend alerts' rolling windows read them; kept this long (a month's budget alert
# finds the minute its budget was reached)
MINUTE_RETENTION = 35 * DAY
CLOCK_SKEW = 300  # seconds another replica's clock may be ahead: its newest records still count
Granularity = Literal["h", "d", "m"]
GRANULARITIES: tuple[Granularity, ...] = ("h", "d", "m")
# (department, key_id, user, model_used, route_rule, experiment, variant); "" stands for None
Group = tuple[str, str, str, str, str, str, str]
# requests, input_tokens, cached_input_tokens, output_tokens, cost_nanos, saved_nanos
SUMS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_nanos",
        "saved_nanos")
_SEP = "\x1f"


# "fine": every dimension; "coarse": department x model only (chargeback, per-department and
# per-model views), a few dozen groups where "fine" has thousands; "people": department x key x
# user (reports by key or user), one group per caller
Detail = Literal["fine", "coarse", "people"]
DETAILS: tuple[Detail, ...] = ("fine", "coarse", "people")


def group_of(record: UsageRecord, detail: Detail = "fine") -> Group:
    if detail == "coarse":
        return (record.department, "", "", record.model_used, "", "", "")
    if detail == "people":
        return (record.department, record.key_id, record.user or "", "", "", "", "")
    return (record.department, record.key_id, record.user or "", record.model_used,
            record.route_rule or "", record.experiment or "", record.variant or "")


def sums_of(record: UsageRecord) -> list[int]:
    return usage_totals((record,))


def encode_group(group: Group) -> str:
    return _SEP.join(group)


def decode_group(field: str) -> Group:
    parts = field.split(_SEP)
    if len(parts) != 7:
        raise ValueError(f"not a rollup group: {field!r}")
    return (parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6])


def bucket_start(granularity: Granularity, ts: float) -> int:
    if granularity == "m":
        return month_start(ts)
    size = HOUR if granularity == "h" else DAY
    return math.floor(ts / size) * size


def month_start(ts: float) -> int:
    moment = datetime.fromtimestamp(ts, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())


def next_month(start: int) -> int:
    moment = datetime.fromtimestamp(start, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


@dataclass(slots=True)
class Slice:
    """Usage of one group over one bucket (an hour, a day, or a single raw record at `start`)."""

    start: float
    group: Group
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    saved_nanos: int = 0

    @property
    def department(self) -> str:
        return self.group[0]

    @property
    def key_id(self) -> str:
        return self.group[1]

    @property
    def user(self) -> str | None:
        return self.group[2] or None

    @property
    def model_used(self) -> str:
        return self.group[3]

    @classmethod
    def of(cls, start: float, group: Group, sums: Iterable[int]) -> Slice:
        return cls(start, group, *sums)

    @classmethod
    def of_record(cls, record: UsageRecord) -> Slice:
        return cls.of(record.ts, group_of(record), sums_of(record))


@dataclass(frozen=True, slots=True)
class Plan:
    """How to read [from, to): these day and hour buckets (their start, unix s) plus raw records
    in `raw` ranges, and month buckets."""

    days: tuple[int, ...]
    hours: tuple[int, ...]
    raw: tuple[tuple[float, float], ...]
    months: tuple[int, ...] = ()

    @property
    def buckets(self) -> list[tuple[Granularity, int]]:
        return [*(("m", m) for m in self.months), *(("d", d) for d in self.days),
                *(("h", h) for h in self.hours)]


def plan_range(from_ts: float, to_ts: float, now: float, coarsest: Granularity = "m") -> Plan:
    """Cover [from_ts, to_ts) with whole days, whole hours and raw edges. A bucket that ends
    after `to_ts` still counts as whole when `to_ts` is in the future: no record is newer than
    `now` (give or take CLOCK_SKEW). `coarsest="d"` for reports by day, "h" by hour."""

    def covered(end: float) -> bool:
        return end <= to_ts or to_ts > now

    months: list[int] = []
    days: list[int] = []
    hours: list[int] = []
    raw: list[tuple[float, float]] = []
    t = from_ts
    if t % HOUR:
        edge = min(bucket_start("h", t) + HOUR, to_ts)
        raw.append((t, edge))
        t = edge
    while t < to_ts and t <= now + CLOCK_SKEW:
        if coarsest == "m" and t == month_start(t) and covered(next_month(int(t))):
            months.append(int(t))
            t = next_month(int(t))
        elif coarsest != "h" and t % DAY == 0 and covered(t + DAY):
            days.append(int(t))
            t += DAY
        elif covered(t + HOUR):
            hours.append(int(t))
            t += HOUR
        else:
            raw.append((t, to_ts))
            break
    return Plan(tuple(days), tuple(hours), tuple(raw), tuple(months))


def in_department(group: Group, department: str | None) -> bool:
    return department is None or group[0] == department


# ----- arm statistics ----------------------------------------------------------------------------
# "arms" rollups: per department x experiment x variant x model x provider x task x route, what
# experiment results, routing recommendations and the daily series need beyond the usage sums:
# error and cache-lookup counts, savings, and (count, sum, sum of squares) of latency, time to
# first token, cost, tokens and quality, so means and variances come out exact. Latencies are kept
# in integer microseconds and quality scores in millionths (the statistics use those quantised
# values, from records or rollups alike); a square is split into LIMBS base-10**6 limbs because
# the rollup script adds in Lua doubles (exact only below 2**53) and a month of squared
# nano-dollars is not.
# department, experiment, variant, model_used, provider, task, route_rule; "" stands for None
ArmKey = tuple[str, str, str, str, str, str, str]
MICROS_PER_MS = 1000
QUALITY_SCALE = 1_000_000
LIMB = 10**6
LIMBS = 5
MOMENTS = ("latency_us", "ttft_us", "cost_nanos", "input_tokens", "output_tokens", "quality")
# requests, errors, cost_nanos and saved_nanos (every request), cache lookups, cache hits, then per
# MOMENTS name
# (count, sum, LIMBS limbs of the sum of squares); latency to output tokens over successful
# requests only, quality over every rated one
ARM_HEAD = ("requests", "errors", "cost_nanos", "saved_nanos", "lookups", "hits")
MOMENT_WIDTH = 2 + LIMBS
ARM_WIDTH = len(ARM_HEAD) + MOMENT_WIDTH * len(MOMENTS)
QUALITY_AT = len(ARM_HEAD) + MOMENT_WIDTH * MOMENTS.index("quality")
LOOKUPS = ("hit-exact", "hit-semantic", "miss")  # requests the cache was asked about


@dataclass(frozen=True, slots=True)
class ArmSlice:
    """Arm statistics of one key over one bucket (its start, unix s)."""

    start: float
    key: ArmKey
    sums: tuple[int, ...]

    @property
    def department(self) -> str:
        return self.key[0]

    @property
    def experiment(self) -> str:
        return self.key[1]

    @property
    def variant(self) -> str:
        return self.key[2]

    @property
    def model_used(self) -> str:
        return self.key[3]

    @property
    def provider(self) -> str:
        return self.key[4]

    @property
    def task(self) -> str:
        return self.key[5]

    @property
    def route_rule(self) -> str:
        return self.key[6]

    @property
    def requests(self) -> int:
        return self.sums[0]

    def named(self, model: str) -> ArmSlice:
        """The same statistics under another model name (the public one)."""
        return ArmSlice(self.start, (*self.key[:3], model, *self.key[4:]), self.sums)


def arm_key(record: UsageRecord) -> ArmKey:
    return (record.department, record.experiment or "", record.variant or "", record.model_used,
            record.provider, record.task or "", record.route_rule or "")


def limbs(value: int) -> list[int]:
    """`value` as LIMBS base-LIMB digits, each carrying the sign (sums of them stay linear); the
    last takes what is left (below LIMB for a square of up to $10^6 in nano-dollars)."""
    sign, rest, out = (-1 if value < 0 else 1), abs(value), []
    for _ in range(LIMBS - 1):
        rest, digit = divmod(rest, LIMB)
        out.append(sign * digit)
    return [*out, sign * rest]


def unlimb(parts: Iterable[int]) -> int:
    return sum(part * LIMB**i for i, part in enumerate(parts))


def moment(value: int | None) -> list[int]:
    return [0] * MOMENT_WIDTH if value is None else [1, value, *limbs(value * value)]


def quality_units(score: float | None) -> int | None:
    return None if score is None else round(score * QUALITY_SCALE)


def arm_sums(record: UsageRecord) -> list[int]:
    return arm_totals((record,))


def rollup_key(record: UsageRecord) -> tuple[Any, ...]:
    """Everything a record's rollup groups, arm keys and minute are made of: records with the
    same one add to the same fields, so a batch of them is rolled up as one."""
    return (record.department, record.key_id, record.user, record.model_used, record.route_rule,
            record.experiment, record.variant, record.provider, record.task,
            math.floor(record.ts / MINUTE) * MINUTE)


def usage_totals(records: Iterable[UsageRecord]) -> list[int]:
    """sums_of() of `records` added up."""
    sums = [0, 0, 0, 0, 0, 0]
    for record in records:
        sums[0] += 1
        sums[1] += record.input_tokens
        sums[2] += record.cached_input_tokens
        sums[3] += record.output_tokens
        sums[4] += record.cost_nanos
        sums[5] += record.saved_nanos
    return sums


def arm_totals(records: Iterable[UsageRecord]) -> list[int]:
    """The arm sums of `records` (see ARM_HEAD and MOMENTS), for records of one arm key and
    bucket rolled at once; arm_sums() is this for one record.

    Each moment's squares are summed first and split into limbs once, so the limbs are not
    those of adding each record's limbs, but their value (`unlimb`, how every reader takes them)
    is the same; limbs exist for the Redis rollups' Lua doubles, and in process the sums are
    Python integers. A sixth of the work of adding arm_sums() record by record."""
    n = errors = cost = saved = lookups = hits = 0
    moments = [[0, 0, 0] for _ in MOMENTS]  # count, sum, sum of squares
    lat, ttft_m, cost_m, inp, out, quality = moments
    for record in records:
        n += 1
        cost += record.cost_nanos
        saved += record.saved_nanos
        cache = record.cache
        if cache in LOOKUPS:
            lookups += 1
            hits += cache != "miss"
        units = quality_units(record.quality_score)
        if units is not None:
            quality[0] += 1
            quality[1] += units
            quality[2] += units * units
        if record.failed:  # latency to output tokens are over successful requests only
            errors += 1
            continue
        for acc, value in ((lat, round(record.latency_ms * MICROS_PER_MS)),
                           (cost_m, record.cost_nanos), (inp, record.input_tokens),
                           (out, record.output_tokens)):
            acc[0] += 1
            acc[1] += value
            acc[2] += value * value
        if record.ttft_ms is not None:
            value = round(record.ttft_ms * MICROS_PER_MS)
            ttft_m[0] += 1
            ttft_m[1] += value
            ttft_m[2] += value * value
    sums = [n, errors, cost, saved, lookups, hits]
    for count, total, squares in moments:
        sums += [count, total, *limbs(squares)]
    return sums


def quality_delta(old: float | None, new: float) -> list[int]:
    """What replacing a record's quality score `old` by `new` adds to its arm sums."""
    delta = [0] * ARM_WIDTH
    before, after = moment(quality_units(old)), moment(quality_units(new))
    delta[QUALITY_AT:QUALITY_AT + MOMENT_WIDTH] = [a - b for a, b in zip(after, before,
                                                                          strict=True)]
    return delta


def encode_arm_key(key: ArmKey) -> str:
    return _SEP.join(key)


def decode_arm_key(field: str) -> ArmKey:
    parts = field.split(_SEP)
    if len(parts) != 7:
        raise ValueError(f"not an arm rollup key: {field!r}")
    return (parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6])


# The daily series' lean day rollup: per UTC day x department x model x provider x task, the
# ARM_HEAD sums, kept as an arm rollup with experiment, variant and route left blank (~100 groups
# a day where the day arm rollup has ~1,400 in the benchmark: docs/benchmarks.md). Read as arm
# buckets of level LEAN_DAY; the daily series from it equals the series from the day arms.
LEAN_DAY: Literal["l"] = "l"
ArmLevel = Literal["h", "d", "m", "l"]


def lean_key(record: UsageRecord) -> ArmKey:
    return (record.department, "", "", record.model_used, record.provider, record.task or "",
            "")


def lean_sums(record: UsageRecord) -> list[int]:
    return arm_sums(record)[:len(ARM_HEAD)]


def arm_slice_of(record: UsageRecord, granularity: Granularity = "h") -> ArmSlice:
    """A record as the arm rollup of its bucket would count it (statistics from raw records)."""
    return ArmSlice(bucket_start(granularity, record.ts), arm_key(record),
                    tuple(arm_sums(record)))


# ----- minutes ---------------------------------------------------------------------------------

# the field counting the writes to an hour's department x minute cost hash (lua/minutes.lua)
CHANGES_FIELD = "n"


def minute_field(group: tuple[str, ...], ts: float) -> str:
    """A minute rollup's field: the group (coarse, or the department alone) and the minute."""
    return f"{_SEP.join(group)}{_SEP}{math.floor(ts / MINUTE) * MINUTE}"


def decode_minute_field(field: str) -> tuple[Group, int]:
    head, _, minute = field.rpartition(_SEP)
    return decode_group(head), int(minute)


def split_edge(start: float, end: float, now: float) -> tuple[tuple[int, int] | None,
                                                                list[tuple[float, float]]]:
    """An edge [start, end) inside one hour as whole minutes (from the minute rollups, while they
    are kept) and what is left for the raw records: at most a minute on either side."""
    first, last = math.ceil(start / MINUTE) * MINUTE, math.floor(end / MINUTE) * MINUTE
    if first >= last or start < now - MINUTE_RETENTION + HOUR:
        return None, [(start, end)]
    raw = [(start, float(first))] if start < first else []
    if last < end:
        raw.append((float(last), end))
    return (first, last), raw
