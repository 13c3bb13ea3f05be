"""Fixtures shared by the spend/chargeback/notify tests: one store factory over both backends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from proxy.config.departments import DepartmentsConfig, parse_departments
from proxy.spend.ledger import Ledger, SpendOptions, create_spend_store
from proxy.spend.notify import NoticeSink
from proxy.spend.pricing import PricingTable, load_pricing, to_nanos
from proxy.spend.records import UsageRecord

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
