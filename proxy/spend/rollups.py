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
from typing import Literal

from proxy.spend.records import UsageRecord

HOUR = 3600
DAY = 86_400
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
    return [1, record.input_tokens, record.cached_input_tokens, record.output_tokens,
            record.cost_nanos, record.saved_nanos]


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
    `now` (give or take CLOCK_SKEW). `coarsest="d"` for reports by day."""

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
        elif t % DAY == 0 and covered(t + DAY):
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
