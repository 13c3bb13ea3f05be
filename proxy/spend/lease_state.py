"""What a replica keeps per department between lease calls (proxy.spend.leases): its lease,
the holds of requests in flight, the spend not written yet, and the call out to Redis."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

from proxy.spend.budgets import Window


@dataclass(slots=True)
class LeaseCall:
    """One lease call's payload, kept until Redis has answered it (re-sent with the same seq)."""

    seq: int
    keep: int
    held: int
    held_until: float  # clock time the latest of those holds expires
    release: bool
    windows: dict[str, tuple[Window, int]]  # wid -> (window, spend delta)
    breaker: dict[int, int]  # minute -> nanos
    rates: dict[tuple[str, int], int]  # ("rpm"|"tpm", minute) -> delta
    settlements: int


@dataclass(slots=True)
class DepartmentLease:
    """This replica's lease and unwritten spend for one department."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    amount: int = 0  # the lease as Redis holds it (while a call is unanswered: its lower bound)
    valid_until: float = 0.0  # clock time before which admissions may use the lease
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid -> (nanos, expiry)
    held: int = 0
    next_expiry: float = math.inf
    held_until: float = 0.0  # the latest expiry among the holds (0 once there are none)
    keys_until: float = 0.0  # clock time the reservation keys' TTL is known to reach
    unwritten: int = 0  # settled cost not written yet (sent in no call)
    claimed: int = 0  # free lease kept for requests whose lease call is out
    windows: dict[str, tuple[Window, int]] = field(default_factory=dict)  # pending spend
    breaker: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    rates: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    settlements: int = 0  # settlements in the pending deltas
    inflight: LeaseCall | None = None  # sent, not answered (or the answer was lost)
    seq: int = 0
    current: tuple[Window, ...] = ()  # the budget windows of the latest plan (limits)
    known: dict[str, int] = field(default_factory=dict)  # spend per window at the last answer
    breaker_known: int | None = None
    breaker_minutes: int = 0
    breaker_max: int = 0
    rpm: int | None = None
    tpm: int | None = None
    minute: int = 0  # the minute the rate slices below belong to
    rpm_left: int = 0
    tpm_left: int = 0
    held_reported: int = 0
    last_call: float = 0.0  # monotonic
    call_gap: float = 0.0  # recent time between answered lease calls (a busy loop stretches it)
    ttl_refreshed: float = -math.inf  # monotonic: reservation keys' TTL last set
    # recent rate (per second, monotonic clock) for sizing slices
    need_rate: float = 0.0
    rpm_rate: float = 0.0
    tpm_rate: float = 0.0
    admitted_need: int = 0
    admitted_requests: int = 0
    admitted_tokens: int = 0
    rate_since: float = field(default_factory=time.monotonic)
    last_admit: float = -math.inf
    waiting: tuple[int, int, int] = (0, 0, 0)  # (budget, requests, tokens) of waiting admits
    refreshing: asyncio.Future[None] | None = None  # an admit's lease call, answered or not
    starved_until: float = -math.inf  # monotonic: the last top-up got nothing; wait for this

    @property
    def free(self) -> int:
        return self.amount - self.held - self.unwritten - self.claimed

    def pending(self) -> bool:
        return bool(self.windows or self.breaker or self.rates or self.unwritten)

    def unhold(self, reservation_id: str) -> bool:
        """Free a hold of this lease; False if it was not held (settled or expired)."""
        held = self.holds.pop(reservation_id, None)
        if held is None:
            return False
        self.held -= held[0]
        if not self.holds:
            self.held_until = 0.0
        return True


def add_need(a: tuple[int, int, int], b: tuple[int, int, int],
          sign: int) -> tuple[int, int, int]:
    return a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2]
