"""Spend refusals and the pure window arithmetic (proxy/spend/budgets.py) that the memory backend
and the Redis Lua scripts both implement."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from proxy.spend.budgets import (
    RATE_WINDOW_SECONDS,
    WINDOW_KEY_GRACE_SECONDS,
    AdmitPlan,
    BudgetExhausted,
    BudgetStatus,
    CircuitOpen,
    DepartmentRateLimited,
    Reservation,
    Window,
    breaker_retry_after,
    plan_admission,
    rate_position,
    reservation_amount,
    sliding_count,
    sliding_retry_after,
    window_at,
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- refusals --------------------------------------------------------------------------------

def test_budget_exhausted_is_a_429_with_whole_seconds_to_wait() -> None:
    error = BudgetExhausted("sales", "daily", 20.000000004)
    assert (error.status, error.retry_after, error.period, error.department) == (
        429, 20, "daily", "sales")
    assert error.headers == {"Retry-After": "20"}
    assert error.to_dict() == {"error": {
        "message": "Department 'sales' has exhausted its daily budget; it resets in 20 s.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}


@pytest.mark.parametrize(("retry_after", "header"), [(0.0, "1"), (-5.0, "1"), (0.2, "1"),
                                                      (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_is_at_least_one_second_rounded_up(retry_after: float, header: str) -> None:
    assert DepartmentRateLimited("d", "rpm", retry_after).headers["Retry-After"] == header


def test_rate_limit_and_breaker_refusals() -> None:
    rpm = DepartmentRateLimited("eng", "tpm", 3.0)
    assert rpm.limit == "tpm" and rpm.status == 429
    assert rpm.to_dict()["error"] == {"message": "Department 'eng' is over its tpm limit.",
                                      "type": "rate_limit_error", "param": None,
                                      "code": "rate_limit_exceeded"}
    breaker = CircuitOpen("eng", 90.5)
    assert breaker.retry_after == 91
    assert breaker.to_dict()["error"]["code"] == "circuit_breaker_open"
    assert breaker.to_dict()["error"]["type"] == "rate_limit_error"
    assert "An admin can resume it." in breaker.message


# -- windows ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("period", "moment", "start", "ends"), [
    ("hourly", "2025-06-15T15:00:00", "2025-06-15T15:00:00", "2025-06-15T16:00:00"),
    ("hourly", "2025-06-15T15:59:59.999", "2025-06-15T15:00:00", "2025-06-15T16:00:00"),
    ("daily", "2025-06-15T00:00:00", "2025-06-15T00:00:00", "2025-06-16T00:00:00"),
    ("daily", "2024-02-28T23:00:00", "2024-02-28T00:00:00", "2024-02-29T00:00:00"),
    ("monthly", "2024-02-29T12:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
    ("monthly", "2025-12-01T00:00:00", "2025-12-01T00:00:00", "2026-01-01T00:00:00"),
])
def test_window_at_is_the_utc_calendar_period(period: str, moment: str, start: str,
                                              ends: str) -> None:
    window = window_at(period, ts(moment), 7)  # type: ignore[arg-type]
    assert window.ends_at == ts(ends)
    assert window.limit_nanos == 7
    # every instant of the same period has the same id, the next period another
    assert window_at(period, ts(start), 7).wid == window.wid  # type: ignore[arg-type]
    assert window_at(period, ts(ends), 7).wid != window.wid  # type: ignore[arg-type]


def test_window_ids_are_distinct_across_periods() -> None:
    now = ts("2025-06-15T15:06:40")
    ids = {window_at(p, now).wid for p in ("hourly", "daily", "monthly")}
    assert len(ids) == 3
    assert window_at("monthly", now).wid == "m202506"


def test_window_ttl_outlives_the_window_by_the_grace() -> None:
    window = Window("daily", "d1", ends_at=1000.0)
    assert window.ttl(900.0) == 100 + WINDOW_KEY_GRACE_SECONDS
    assert window.ttl(899.5) == 101 + WINDOW_KEY_GRACE_SECONDS
    assert window.ttl(1000.0 + WINDOW_KEY_GRACE_SECONDS) == 0
    assert window.ttl(1e12) == 0


# -- admission -------------------------------------------------------------------------------

def plan(*limits: int, fixed: int = 100, per_token: float = 10.0, max_tokens: int = 100,
         min_tokens: int = 1, cap: bool = False) -> AdmitPlan:
    windows = tuple(Window("daily", f"w{i}", 1e10, limit) for i, limit in enumerate(limits))
    return AdmitPlan("d", "r1", 0.0, 600.0, windows, fixed, per_token, max_tokens, min_tokens,
                     cap, None, None, 0, None)


def test_reservation_amount_rounds_the_token_part_up() -> None:
    assert reservation_amount(100, 10.0, 100) == 1100
    assert reservation_amount(0, 0.3, 10) == 3
    assert reservation_amount(0, 0.33, 10) == 4
    assert reservation_amount(5, 0.0, 10**6) == 5


def test_a_request_that_fits_every_window_reserves_its_worst_case() -> None:
    assert plan_admission(plan(10_000, 1_100), [0, 0], 0) == (1100, None, ())
    assert plan_admission(plan(), [], 0) == (1100, None, ())  # no budget configured


def test_windows_that_cannot_fit_are_named() -> None:
    assert plan_admission(plan(10_000, 2_000, 1_000), [0, 1_000, 0], 0) == (0, None, (1, 2))
    # open reservations count against every window
    assert plan_admission(plan(10_000, 5_000), [0, 0], 9_000) == (0, None, (0, 1))


@pytest.mark.parametrize(("room", "expected"), [
    (1_100, (1100, None, ())),  # fits: no cap
    (1_099, (1090, 99, ())),  # capped to what fits
    (110, (110, 1, ())),
    (109, (0, None, (0,))),  # not even min_tokens fit
    (100, (0, None, (0,))),  # nothing beyond the fixed part
])
def test_cap_shrinks_max_tokens_to_the_room_left(room: int,
                                                 expected: tuple[int, int | None, tuple[int, ...]]
                                                 ) -> None:
    assert plan_admission(plan(10_000, cap=True), [10_000 - room], 0) == expected


def test_cap_respects_min_tokens_and_the_tightest_window() -> None:
    assert plan_admission(plan(600, cap=True, min_tokens=60), [0], 0) == (0, None, (0,))
    assert plan_admission(plan(600, cap=True, min_tokens=50), [0], 0) == (600, 50, ())
    assert plan_admission(plan(10_000, 700, cap=True), [0, 0], 0) == (700, 60, ())


def test_cap_never_reserves_more_than_the_room_with_fractional_prices() -> None:
    # 100 fixed + 3.3 per token: one token needs 104, all 100 tokens need 430 (no cap then)
    for room in range(104, 430, 7):
        amount, tokens, failing = plan_admission(plan(room, per_token=3.3, cap=True), [0], 0)
        assert failing == () and tokens is not None
        assert amount <= room
        assert reservation_amount(100, 3.3, tokens + 1) > room  # and as many tokens as fit


def test_cap_is_not_possible_without_a_token_price() -> None:
    assert plan_admission(plan(50, per_token=0.0, cap=True), [0], 0) == (0, None, (0,))


# -- rates and breaker -----------------------------------------------------------------------

def test_rate_position() -> None:
    assert rate_position(120.0) == (2, 0.0)
    minute, elapsed = rate_position(150.0)
    assert minute == 2 and elapsed == pytest.approx(0.5)
    assert rate_position(-30.0) == (-1, 0.5)


def test_sliding_count_weighs_the_previous_minute_by_its_overlap() -> None:
    assert sliding_count(3, 10, 0.0) == 13
    assert sliding_count(3, 10, 0.25) == pytest.approx(10.5)
    assert sliding_count(3, 10, 1.0) == 3


def test_sliding_retry_after() -> None:
    # more than the whole limit: wait a full window
    assert sliding_retry_after(0, 0, 0.5, 11, 10) == RATE_WINDOW_SECONDS
    # the current minute alone is full: wait for the next one
    assert sliding_retry_after(10, 0, 0.25, 1, 10) == pytest.approx(45.0)
    # room in this minute once enough of the previous one has slid out:
    # need previous * (1 - e) <= limit - current - cost -> 10 * (1 - e) <= 5 -> e >= 0.5
    assert sliding_retry_after(4, 10, 0.25, 1, 10) == pytest.approx(15.0)
    assert sliding_retry_after(4, 10, 0.499, 1, 10) == 1.0  # never less than a second
    assert sliding_retry_after(10, 0, 0.999, 1, 10) == 1.0


def test_breaker_retry_after_waits_for_old_buckets_to_leave_the_window() -> None:
    now = 10 * 60 + 30.0  # minute 10, half way
    # window of 5 minutes starting at minute 6: buckets for minutes 6..10, ceiling 100
    assert breaker_retry_after([50, 50, 50, 0, 0], 6, 5, 100, now) == (6 + 5) * 60 - now
    assert breaker_retry_after([50, 50, 50, 0, 0], 6, 5, 50, now) == (7 + 5) * 60 - now
    assert breaker_retry_after([50, 50, 50, 0, 0], 6, 5, 49, now) == (8 + 5) * 60 - now
    # still over the ceiling with only the newest bucket: a full window
    assert breaker_retry_after([0, 0, 0, 0, 500], 6, 5, 100, now) == (10 + 5) * 60 - now
    assert breaker_retry_after([], 6, 5, 100, now) == 5 * 60.0


# -- value objects ---------------------------------------------------------------------------

def test_reservation_and_budget_status() -> None:
    held = Reservation("r", "d", "m", 1_500_000_000, None, 10, 0.0)
    assert held.capped is False and held.reserved_dollars == 1.5
    assert Reservation("r", "d", "m", 1, 64, 10, 0.0).capped is True
    status = BudgetStatus("d", "daily", 10.0, 7.5, 1.0, 3600.0)
    assert status.remaining_dollars == pytest.approx(1.5)
    over = BudgetStatus("d", "daily", 10.0, 9.0, 5.0, 3600.0)
    assert over.remaining_dollars == 0.0
    assert not math.isnan(over.remaining_dollars)
