"""1,000 clients that leave mid-stream leak nothing: every upstream stream is cancelled, the
proxy's sockets and asyncio tasks return to where they started, and each request's spend is
recorded for what had been relayed (issue 16, item 8)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import psutil
import yaml

from tests.support.servers import ServerThread

CLIENTS = 1000
TEXT = re.compile(rb'"content":"[^"]')  # a delta with text in it (the first one only has a role)
ENG = {"authorization": "Bearer sk-demo-engineering"}
ADMIN = {"authorization": "Bearer sk-demo-admin"}


def departments() -> str:
    spec = {"allowed_models": ["*"], "rpm": 1_000_000,
            "tpm": 1_000_000_000, "budgets": {"daily": 1000}}
    names = ("engineering", "sales", "marketing", "executive")
    return yaml.safe_dump({"version": 1, "departments": {n: dict(spec) for n in names}})


def on_loop(server: ServerThread, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = server.server.servers[0].get_loop()
    return asyncio.run_coroutine_threadsafe(make(), loop).result(30)


async def count_tasks() -> int:
    return len(asyncio.all_tasks()) - 1  # not this one


def open_sockets(*ports: int) -> int:
    """Connected TCP sockets of this process (the proxy, the mock and the clients all live in
    it) that touch one of `ports`; listeners don't count."""
    return sum(1 for c in psutil.Process().net_connections("tcp")
               if c.status != psutil.CONN_LISTEN
               and ((c.laddr and c.laddr.port in ports) or (c.raddr and c.raddr.port in ports)))


def settle(probe: Callable[[], int], target: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    value = probe()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.2)
        value = probe()
    return value


async def leave_after_first_chunk(url: str, n: int) -> list[str]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(i: int) -> str:
            body = {"model": "gpt-4o-mini", "stream": True, "messages": [
                {"role": "user", "content": f"leave {i} {uuid.uuid4().hex} #fault:slow_stream"}]}
            async with client.stream("POST", url + "/v1/chat/completions", json=body,
                                     headers=ENG) as r:
                assert r.status_code == 200
                seen = b""
                async for chunk in r.aiter_bytes():
                    seen += chunk
                    if TEXT.search(seen):
                        break  # the client goes away with the answer half-sent
                return r.headers["x-request-id"]
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_a_thousand_clients_leaving_mid_stream_leak_nothing(
        start_proxy: Callable[..., ServerThread], mock_upstream: ServerThread) -> None:
    proxy = start_proxy(edits={"departments.yaml": departments(), "cache.yaml": "enabled: false\n"})
    ports = (proxy.port, mock_upstream.port)
    warm = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG, timeout=30, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}]})
    assert warm.status_code == 200
    assert settle(lambda: open_sockets(*ports), 0) == 0
    tasks_before = on_loop(proxy, count_tasks)
    mock_before = httpx.get(mock_upstream.url + "/_mock/stats").json()

    ids = asyncio.run(leave_after_first_chunk(proxy.url, CLIENTS))

    assert len(set(ids)) == CLIENTS
    deadline = time.monotonic() + 60
    while True:
        mock = httpx.get(mock_upstream.url + "/_mock/stats").json()
        aborted = mock["streams_aborted"] - mock_before["streams_aborted"]
        if aborted >= CLIENTS or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert aborted == CLIENTS  # every upstream stream was cancelled, none ran to its end
    assert mock["streams_completed"] == mock_before["streams_completed"]
    assert settle(lambda: open_sockets(*ports), 0) == 0
    assert settle(lambda: on_loop(proxy, count_tasks), tasks_before) == tasks_before

    spend = httpx.get(proxy.url + "/admin/spend", params={"by": "department"}, headers=ADMIN,
                      timeout=30).json()
    assert spend["requests"] == CLIENTS + 1
    services = proxy.server.config.app.state.services
    records = on_loop(proxy, lambda: services.spend.records(0, time.time() + 60, None))
    cut = {r.request_id: r for r in records if r.request_id in set(ids)}
    assert len(cut) == CLIENTS
    for record in cut.values():
        assert record.error == "client_disconnected" and record.cost_estimated
        assert record.output_tokens > 0 and record.cost > 0
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    eng = next(d for d in budgets if d["department"] == "engineering")
    assert eng["budgets"][0]["reserved_dollars"] == 0
