"""Fixtures shared by the spend/chargeback/notify tests: one store factory over both backends."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from proxy.config.departments import DepartmentsConfig, parse_departments
from proxy.spend.ledger import Ledger, SpendOptions, create_spend_store
from proxy.spend.notify import NoticeSink
from proxy.spend.pricing import PricingTable, load_pricing, to_nanos
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import (
    ARM_HEAD,
    ARM_WIDTH,
    DETAILS,
    GRANULARITIES,
    MOMENT_WIDTH,
    MOMENTS,
    SUMS,
    arm_key,
    arm_sums,
    bucket_start,
    group_of,
    sums_of,
    unlimb,
)

# usage sums, arm sums (limbs joined) and department-minute costs, keyed by bucket and group
Rollups = tuple[dict[Any, list[int]], dict[Any, list[int]], dict[tuple[str, int], int]]
T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z: mid-hour, mid-day, mid-month


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StoreFactory(Protocol):
    def __call__(
        self,
        departments: dict[str, Any],
        *,
        clock: Callable[[], float] | None = ...,
        notifier: NoticeSink | None = ...,
        **options: Any,
    ) -> Ledger: ...


def departments_config(**departments: dict[str, Any]) -> DepartmentsConfig:
    raw = {
        name: dict(spec)
        for name, spec in departments.items()
    }
    return parse_departments({"departments": raw})


def usd(dollars: float) -> int:
    """Dollars -> the integer nano-dollars settle() takes."""
    return to_nanos(dollars)


def make_record(request_id: str, ts: float, **fields: Any) -> UsageRecord:
    """A usage record of `eng`; `cost` and `saved` may be given in dollars."""
    for name in ("cost", "saved"):
        if name in fields:
            fields[f"{name}_nanos"] = to_nanos(fields.pop(name))
    base: dict[str, Any] = {
        "request_id": request_id, "ts": ts, "department": "eng", "key_id": "k1", "user": "ann",
        "endpoint": "chat.completions", "model_requested": "gpt-4o-mini",
        "model_used": "gpt-4o-mini", "provider": "openai", "status": 200,
    }  # fmt: skip
    return UsageRecord(**{**base, **fields})


@pytest.fixture(scope="session")
def pricing_table() -> PricingTable:
    return load_pricing()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def spend_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_spend_store(
    request: pytest.FixtureRequest, spend_backend: str, pricing_table: PricingTable
) -> StoreFactory:
    """Build a Ledger on the parametrized backend; Redis ones get this test's key prefix."""
    url: str | None = None
    prefix = "meterline:"
    if spend_backend == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

    def build(
        departments: dict[str, Any],
        *,
        clock: Callable[[], float] | None = None,
        notifier: NoticeSink | None = None,
        **options: Any,
    ) -> Ledger:
        target = options.pop("redis_url", url)
        opts = SpendOptions(key_prefix=options.pop("key_prefix", prefix), **options)
        return create_spend_store(
            target, departments_config(**departments), pricing_table,
            options=opts, notifier=notifier, clock=clock or FakeClock(),
        )  # fmt: skip

    return build


class TcpSwitch:
    """A 127.0.0.1 TCP forwarder to Redis that a test can cut and restore (an outage)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[object]] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await asyncio.gather(*self._tasks)  # every connection handler ends before we return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._writers.add(writer)  # down() closes it even while we connect upstream
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if self._server is None:  # cut while this connection was being made
            up_writer.close()
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # the other side went away: the outage this helper exists to cause
        finally:
            writer.close()


def random_records(rng: random.Random, n: int) -> list[UsageRecord]:
    """Records over three days and every rollup dimension; half of them are a hot key's (one
    department, key, user and model in T0's first two minutes), so batches share rollup keys."""
    records = []
    for i in range(n):
        hot = rng.random() < 0.5
        dims: dict[str, Any] = {} if hot else {
            "department": rng.choice(("eng", "ops")), "key_id": rng.choice(("k1", "k2")),
            "user": rng.choice((None, "ann", "bo")),
            "model_used": rng.choice(("gpt-4o-mini", "gpt-4o")),
            "route_rule": rng.choice((None, "r")), "experiment": rng.choice((None, "x")),
            "variant": rng.choice((None, "a", "b")), "task": rng.choice((None, "code"))}
        ts = T0 + (rng.uniform(0, 120) if hot else rng.uniform(0, 3 * 86_400))
        records.append(make_record(
            f"q{i}", ts, **dims, status=rng.choice((200, 200, 200, 429, 500)),
            error=rng.choice((None, None, "cut")), input_tokens=rng.randint(0, 5000),
            cached_input_tokens=rng.randint(0, 100), output_tokens=rng.randint(0, 900),
            cost_nanos=rng.choice((0, rng.randint(1, 10**9))), saved_nanos=rng.randint(0, 10**8),
            cache=rng.choice(("off", "miss", "hit-exact", "hit-semantic")),
            latency_ms=rng.uniform(0.1, 900), ttft_ms=rng.choice((None, rng.uniform(0, 50))),
            quality_score=rng.choice((None, rng.random()))))
    return records


def expected_rollups(records: list[UsageRecord]) -> Rollups:
    """Rollups, arms and minute sums by their definition: each record added on its own."""
    fine: dict[Any, list[int]] = {}
    arms: dict[Any, list[int]] = {}
    minutes: dict[tuple[str, int], int] = {}
    for r in records:
        for detail in DETAILS:
            for granularity in GRANULARITIES:
                fine_key = (detail, granularity, bucket_start(granularity, r.ts),
                            group_of(r, detail))
                fine[fine_key] = [a + b for a, b in zip(fine.get(fine_key, [0] * 6), sums_of(r),
                                                   strict=True)]
        for granularity in GRANULARITIES:
            key = (granularity, bucket_start(granularity, r.ts), arm_key(r))
            arms[key] = [a + b for a, b in zip(arms.get(key, [0] * ARM_WIDTH), arm_sums(r),
                                               strict=True)]
        minute = (r.department, int(r.ts // 60) * 60)
        minutes[minute] = minutes.get(minute, 0) + r.cost_nanos
    return (fine, {k: moment_values(v) for k, v in arms.items()},
            {k: v for k, v in minutes.items() if v})


def moment_values(sums: tuple[int, ...] | list[int]) -> list[int]:
    """Arm sums with each moment's limbs joined into the sum of squares they stand for."""
    head, out = len(ARM_HEAD), list(sums[:len(ARM_HEAD)])
    for m in range(len(MOMENTS)):
        at = head + m * MOMENT_WIDTH
        out += [sums[at], sums[at + 1], unlimb(sums[at + 2:at + MOMENT_WIDTH])]
    return out


async def read_rollups(backend: Any) -> Rollups:
    """What `backend` reads back from every usage, arm and minute bucket in T0's three days,
    shaped as expected_rollups() gives it."""
    starts = {(g, bucket_start(g, T0 + h * 3600)) for g in GRANULARITIES for h in range(74)}
    fine: dict[Any, list[int]] = {}
    for detail in DETAILS:
        for granularity, start in starts:
            for part in await backend.rollups([(granularity, start)], None, detail):
                fine[(detail, granularity, start, part.group)] = [
                    getattr(part, name) for name in SUMS]
    arms: dict[Any, list[int]] = {}
    for granularity, start in starts:
        for arm in await backend.arm_rollups([(granularity, start)]):
            arms[(granularity, start, arm.key)] = moment_values(arm.sums)
    hours = sorted({s for g, s in starts if g == "h"})
    minutes = {(d, m): c for d, m, c in await backend.minute_costs(hours)}
    return fine, arms, minutes
