"""Pure helpers for the spend admin API: time parameters and aggregations."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.errors import InvalidRequest
from proxy.spend.budgets import BudgetStatus, SpendDimension
from proxy.spend.pricing import format_nanos
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import Slice

DIMENSIONS: tuple[SpendDimension, ...] = ("department", "key", "user", "model")
RECENT_LIMIT = 20


def parse_instant(raw: str, name: str, *, end_of_day: bool = False) -> float:
    """Unix seconds, an ISO date (start of that UTC day; the next day's start if `end_of_day`)
    or an ISO datetime (UTC unless it names an offset)."""
    value = raw.strip()
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        return number
    try:
        if len(value) == 10:
            day = date.fromisoformat(value) + timedelta(days=1 if end_of_day else 0)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"Invalid '{name}': expected unix seconds, an ISO date "
                             f"(2025-06-01) or datetime, got '{raw}'.", param=name,
                             code="invalid_value") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def month_start(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()


def day_start(now: float) -> float:
    return math.floor(now / 86_400) * 86_400.0


def time_range(params: dict[str, str], now: float | None = None) -> tuple[float, float]:
    """[from, to) from query parameters; defaults: start of this UTC month .. now."""
    now = time.time() if now is None else now
    start = parse_instant(params["from"], "from") if params.get("from") else month_start(now)
    end = (parse_instant(params["to"], "to", end_of_day=True) if params.get("to")
           else now + 1.0)
    if end <= start:
        raise InvalidRequest("Invalid 'to': it must be later than 'from'.", param="to",
                             code="invalid_value")
    return start, end


def dimension(params: dict[str, str]) -> SpendDimension:
    raw = params.get("by") or "department"
    for known in DIMENSIONS:
        if raw == known:
            return known
    raise InvalidRequest(f"Invalid 'by': expected one of {', '.join(DIMENSIONS)}, got '{raw}'.",
                         param="by", code="invalid_value")


def dimension_value(record: Slice, by: SpendDimension) -> str:
    if by == "department":
        return record.department or ADMIN_DEPARTMENT  # records written before it had a name
    if by == "key":
        return record.key_id
    if by == "user":
        return record.user or "(none)"
    return record.model_used


def spend_rows(usage: Iterable[Slice], by: SpendDimension) -> list[dict[str, Any]]:
    """One row per value of `by`: requests, tokens, cost and cache savings (exact sums)."""
    groups: dict[str, list[int]] = {}
    for record in usage:
        g = groups.setdefault(dimension_value(record, by), [0, 0, 0, 0, 0])
        g[0] += record.requests
        g[1] += record.input_tokens
        g[2] += record.output_tokens
        g[3] += record.cost_nanos
        g[4] += record.saved_nanos
    rows = [{by: name, "requests": g[0], "input_tokens": g[1], "output_tokens": g[2],
             "cost_usd": format_nanos(g[3]), "saved_usd": format_nanos(g[4]),
             "cost_nanos": g[3]} for name, g in groups.items()]
    return sorted(rows, key=lambda r: (-int(r["cost_nanos"]), str(r[by])))


def total_nanos(usage: Iterable[Slice], field: str = "cost_nanos") -> int:
    return sum(getattr(r, field) for r in usage)


def total_requests(usage: Iterable[Slice]) -> int:
    return sum(r.requests for r in usage)


def budget_view(status: BudgetStatus) -> dict[str, Any]:
    return {"period": status.period, "limit_dollars": status.limit_dollars,
            "spent_dollars": status.spent_dollars, "reserved_dollars": status.reserved_dollars,
            "remaining_dollars": round(status.remaining_dollars, 6),
            "resets_in_seconds": round(status.resets_in_seconds, 3)}


def department_view(name: str, month: list[Slice], today: list[Slice],
                    statuses: list[BudgetStatus], paused: bool) -> dict[str, Any]:
    """Today's and this month's spend from the usage rollups, plus budget state from the
    counters."""
    mine = [r for r in month if r.department == name]
    today = [r for r in today if r.department == name]
    return {"department": name, "today_usd": format_nanos(total_nanos(today)),
            "month_usd": format_nanos(total_nanos(mine)),
            "saved_usd": format_nanos(total_nanos(mine, "saved_nanos")),
            "requests_today": total_requests(today), "requests_month": total_requests(mine),
            "paused": paused,
            "budgets": [budget_view(s) for s in statuses],
            "budget_remaining_usd": min((round(s.remaining_dollars, 6) for s in statuses),
                                        default=None)}


def recent(records: list[UsageRecord], limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
    return [r.to_dict() for r in sorted(records, key=lambda r: -r.ts)[:limit]]
