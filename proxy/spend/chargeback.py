"""Chargeback: usage (rollups and records) -> rows per UTC day x department x model, plus a totals
row.

Each record's dollar cost is converted once to integer nano-dollars (records hold costs that were
computed in nano-dollars, so the conversion is exact) and everything after is integer addition:
the totals row equals the sum of the per-request records exactly. Dollar amounts are exported as
fixed 6-decimal strings next to the integer micro-dollar values."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.spend.pricing import format_nanos
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import Slice

TOTAL = "TOTAL"
CSV_COLUMNS = (
    "day", "department", "model", "requests", "input_tokens", "cached_input_tokens",
    "output_tokens", "cost_usd", "saved_usd", "cost_nanos", "saved_nanos",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChargebackRow:
    day: str
    department: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    saved_nanos: int = 0

    def plus(self, record: Slice) -> ChargebackRow:
        return replace(
            self,
            requests=self.requests + record.requests,
            input_tokens=self.input_tokens + record.input_tokens,
            cached_input_tokens=self.cached_input_tokens + record.cached_input_tokens,
            output_tokens=self.output_tokens + record.output_tokens,
            cost_nanos=self.cost_nanos + record.cost_nanos,
            saved_nanos=self.saved_nanos + record.saved_nanos,
        )

    def plus_row(self, other: ChargebackRow) -> ChargebackRow:
        return replace(
            self,
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_nanos=self.cost_nanos + other.cost_nanos,
            saved_nanos=self.saved_nanos + other.saved_nanos,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "department": self.department,
            "model": self.model,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": format_nanos(self.cost_nanos),
            "saved_usd": format_nanos(self.saved_nanos),
            "cost_nanos": self.cost_nanos,
            "saved_nanos": self.saved_nanos,
        }


@dataclass(frozen=True, slots=True)
class Chargeback:
    rows: tuple[ChargebackRow, ...]
    total: ChargebackRow


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def build_chargeback(usage: Iterable[Slice | UsageRecord]) -> Chargeback:
    groups: dict[tuple[str, str, str], ChargebackRow] = {}
    for item in usage:
        record = item if isinstance(item, Slice) else Slice.of_record(item)
        key = (utc_day(record.start), record.department or ADMIN_DEPARTMENT, record.model_used)
        groups[key] = groups.get(key, ChargebackRow(*key)).plus(record)
    rows = tuple(groups[key] for key in sorted(groups))
    total = ChargebackRow(TOTAL, "", "")
    for row in rows:
        total = total.plus_row(row)
    return Chargeback(rows, total)


def chargeback_csv(chargeback: Chargeback) -> str:
    return "".join(chargeback_csv_lines(chargeback))


def chargeback_csv_lines(chargeback: Chargeback) -> Iterator[str]:
    """The CSV a line at a time (the export is streamed)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in (*chargeback.rows, chargeback.total):
        writer.writerow(row.as_dict())
        yield out.getvalue()
        out.seek(0)
        out.truncate()


def chargeback_json(chargeback: Chargeback) -> bytes:
    return orjson.dumps(
        {
            "rows": [row.as_dict() for row in chargeback.rows],
            "total": chargeback.total.as_dict(),
            "currency": "USD",
        }
    )
