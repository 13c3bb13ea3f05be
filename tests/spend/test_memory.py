"""The embedded backend keeps a running total of holds; it must equal a full recount."""

from __future__ import annotations

import asyncio
import random

from proxy.spend.budgets import AdmitPlan, Settlement, window_at
from proxy.spend.memory import MemorySpendBackend

T0 = 1_750_000_000.0


def plan(rid: str, now: float, ttl: float, tokens: int) -> AdmitPlan:
    return AdmitPlan(
        department="eng", reservation_id=rid, now=now, expires_at=now + ttl,
        windows=(window_at("daily", now, 10**15),), fixed_nanos=7, per_token_nanos=1.5,
        max_tokens=tokens, min_tokens=1, cap=False, rpm=None, tpm=None, tokens=0, breaker=None,
    )  # fmt: skip


def expected_held(holds: dict[str, tuple[int, float]], now: float) -> int:
    return sum(amount for amount, expires in holds.values() if expires > now)


def test_held_total_matches_a_recount_over_random_admits_settles_and_expiries() -> None:
    async def run() -> None:
        rng = random.Random(7)
        now = T0
        backend = MemorySpendBackend(clock=lambda: now, max_records=10, retention_seconds=1e9)
        holds: dict[str, tuple[int, float]] = {}
        for i in range(3000):
            now += rng.choice((0.0, 0.5, 3.0, 40.0))
            action = rng.random()
            if action < 0.55 or not holds:
                ttl = rng.choice((5.0, 60.0, 600.0))
                outcome = await backend.admit(plan(f"r{i}", now, ttl, rng.randint(0, 5000)))
                assert outcome.status == "ok"
                holds[f"r{i}"] = (outcome.reserved_nanos, now + ttl)
            elif action < 0.9:
                rid = rng.choice(sorted(holds))
                window = window_at("daily", now, 10**15)
                await backend.commit(Settlement("eng", rid, 1, now, (window,), None, 0))
                del holds[rid]
            holds = {r: h for r, h in holds.items() if h[1] > now}
            _, reserved = await backend.window_state("eng", (), now)
            assert reserved == expected_held(holds, now)

    asyncio.run(run())


def test_old_windows_and_rate_minutes_are_still_forgotten() -> None:
    async def run() -> None:
        backend = MemorySpendBackend(clock=lambda: T0, max_records=10, retention_seconds=1e9)

        async def settle(rid: str, now: float) -> None:
            outcome = await backend.admit(AdmitPlan(
                department="eng", reservation_id=rid, now=now, expires_at=now + 600,
                windows=(), fixed_nanos=0, per_token_nanos=0.0, max_tokens=1, min_tokens=1,
                cap=False, rpm=100, tpm=None, tokens=5, breaker=None))
            assert outcome.status == "ok"
            window = window_at("hourly", now, 10**9)
            await backend.commit(Settlement("eng", rid, 3, now, (window,), None, 0))

        await settle("a", T0)
        await settle("b", T0 + 1)
        assert await backend.window_state("eng", (window_at("hourly", T0),), T0 + 1) == ([6], 0)
        later = T0 + 2 * 86_400
        await settle("c", later)
        rate_minutes = {key[2] for key in backend._rates}
        assert rate_minutes <= {int(later // 60), int(later // 60) - 1}
        assert await backend.window_state("eng", (window_at("hourly", T0),), later) == ([0], 0)

    asyncio.run(run())
