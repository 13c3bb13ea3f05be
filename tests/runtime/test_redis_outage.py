"""Redis outages through the running proxy, behind a TCP forwarder the tests cut and restore:
the spend store's fail modes (closed -> 503 and nothing upstream, open -> answered and queued),
the backlog landing in Redis once it is back, keys that can't be checked, and pooled connections
Redis closed. tests/spend/test_ledger.py covers the spend store's side at store level."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from proxy.spend.pricing import to_nanos
from tests.conftest import ProxyStarter
from tests.spend_helpers import TcpSwitch
from tests.support.servers import ServerThread, mock_requests

ADMIN = {"authorization": "Bearer sk-demo-admin"}
ENG = {"authorization": "Bearer sk-demo-engineering"}
SALES = {"authorization": "Bearer sk-demo-sales"}  # never used before the outage in its test
NO_CACHE = "enabled: false\n"
OUTAGE_ANSWER_S = 5.0  # a refused Redis connection must not turn into a hang
FLUSH_DEADLINE_S = 10.0  # the ledger retries its backlog once a second

pytestmark = pytest.mark.redis


class BackgroundSwitch:
    """TcpSwitch on its own event loop thread: the proxy serves from another thread's loop, so
    the forwarder must keep running while the test thread blocks on HTTP calls."""

    def __init__(self, redis_url: str) -> None:
        target = urlparse(redis_url)
        self._switch = TcpSwitch(target.hostname or "127.0.0.1", target.port or 6379)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._switch.port}"

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._switch.up(), self._loop).result(timeout=5)

    def down(self) -> None:
        """Stop listening and close every open connection: Redis is gone for the proxy."""
        asyncio.run_coroutine_threadsafe(self._switch.down(), self._loop).result(timeout=5)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


@pytest.fixture
def switch(redis_url: str) -> Iterator[BackgroundSwitch]:
    forwarder = BackgroundSwitch(redis_url)
    forwarder.up()
    yield forwarder
    forwarder.close()


def start(start_proxy: ProxyStarter, switch: BackgroundSwitch, redis_prefix: str,
          fail_mode: str) -> ServerThread:
    """Tests take `redis_prefix` before `start_proxy`: the proxy stops before its keys go."""
    return start_proxy(edits={"cache.yaml": NO_CACHE},
                       extra_env={"MET_SPEND_FAIL_MODE": fail_mode},
                       redis_url=switch.url, redis_prefix=redis_prefix)


def chat(proxy: ServerThread, prompt: str, headers: dict[str, str] = ENG) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    return httpx.post(proxy.url + "/v1/chat/completions", json=payload, headers=headers,
                      timeout=30)


def timed_chat(proxy: ServerThread, prompt: str,
               headers: dict[str, str] = ENG) -> httpx.Response:
    began = time.monotonic()
    r = chat(proxy, prompt, headers)
    assert time.monotonic() - began < OUTAGE_ANSWER_S
    return r


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def upstream_saw(mock: ServerThread, prompt: str) -> bool:
    """Whether the (session-wide) mock got a chat request ending in `prompt`; other tests'
    requests (embeddings, completions, bad bodies) are in its log too."""
    for seen in mock_requests(mock.url):
        body = seen.get("body")
        messages = body.get("messages") if isinstance(body, dict) else None
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                and messages[-1].get("content") == prompt:
            return True
    return False


def answered(r: httpx.Response) -> tuple[str, int]:
    """(request id, cost in nano-dollars) of a 200 answer."""
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    return r.headers["x-request-id"], to_nanos(float(r.headers["x-meterline-cost-usd"]))


def engineering_spend(proxy: ServerThread) -> dict[str, Any]:
    r = httpx.get(proxy.url + "/admin/spend", params={"department": "engineering"},
                  headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def spend_once_flushed(proxy: ServerThread, request_ids: list[str]) -> dict[str, Any]:
    """GET /admin/spend once every record in `request_ids` is in Redis (queued ones are written
    by the ledger's once-a-second flush; new ones go straight in, so they can come first)."""
    deadline = time.monotonic() + FLUSH_DEADLINE_S
    while time.monotonic() < deadline:
        data = engineering_spend(proxy)
        if set(request_ids) <= {rec["request_id"] for rec in data["recent"]}:
            return data
        time.sleep(0.1)
    raise AssertionError(f"records {request_ids} not in Redis {FLUSH_DEADLINE_S} s after restore")


def wait_until_booked(proxy: ServerThread, requests_today: int) -> None:
    """Answers go out before their spend is booked: wait for the record, through GET /v1/spend
    with the (already looked-up) engineering key, so the admin key is not looked up yet."""
    deadline = time.monotonic() + FLUSH_DEADLINE_S
    while time.monotonic() < deadline:
        r = httpx.get(proxy.url + "/v1/spend", headers=ENG, timeout=10)
        assert r.status_code == 200, r.text
        if r.json()["requests_today"] == requests_today:
            return
        time.sleep(0.05)
    raise AssertionError(f"engineering never had {requests_today} requests booked")


def backlog(proxy: ServerThread) -> float:
    for line in httpx.get(proxy.url + "/metrics").text.splitlines():
        if line.startswith("meterline_spend_backlog_records "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("meterline_spend_backlog_records not exported")


def settled_backlog(proxy: ServerThread, expected: float) -> float:
    """The backlog gauge once it reads `expected` (it is refreshed once a second), or its value
    at the deadline."""
    deadline = time.monotonic() + FLUSH_DEADLINE_S
    while (size := backlog(proxy)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return size


def wait_for_no_lease(redis_url: str, redis_prefix: str, department: str) -> None:
    """An idle department's budget lease goes back within a few flush windows
    (docs/scaling.md, "Leases"): while a replica holds one it admits what the lease covers
    without Redis, outage or not; the fail mode decides everything else."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + FLUSH_DEADLINE_S
        while client.hlen(f"{redis_prefix}{{{department}}}:n:resv:amt"):
            assert time.monotonic() < deadline, "the idle lease was not given back"
            time.sleep(0.05)
    finally:
        client.close()


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_outage_answers_per_fail_mode_and_loses_no_spend(
    switch: BackgroundSwitch, redis_prefix: str, redis_url: str, start_proxy: ProxyStarter,
    mock_upstream: ServerThread, fail_mode: str,
) -> None:
    proxy = start(start_proxy, switch, redis_prefix, fail_mode)
    before = answered(chat(proxy, unique("before the outage")))  # also caches the key lookup
    wait_until_booked(proxy, 1)
    wait_for_no_lease(redis_url, redis_prefix, "engineering")

    switch.down()
    prompt = unique("during the outage")
    r = timed_chat(proxy, prompt)
    if fail_mode == "closed":
        assert r.status_code == 503
        assert r.json() == {"error": {"message": r.json()["error"]["message"],
                                      "type": "api_error", "param": None,
                                      "code": "spend_backend_unavailable"}}
        # the cause (Redis's address) stays in the log, not in what the client reads
        assert r.json()["error"]["message"] == (
            "spend backend unreachable: budgets can't be checked right now. Retry shortly.")
        assert r.headers["x-request-id"]
        assert not upstream_saw(mock_upstream, prompt)
        during: list[tuple[str, int]] = []
    else:
        during = [answered(r)]
        assert upstream_saw(mock_upstream, prompt)
        assert settled_backlog(proxy, 2) == 2  # its settlement and record, waiting for Redis

    switch.up()
    after = answered(chat(proxy, unique("after the outage")))
    booked = [before, *during, after]
    data = spend_once_flushed(proxy, [request_id for request_id, _ in booked])
    costs = {rec["request_id"]: to_nanos(rec["cost"]) for rec in data["recent"]}
    assert costs == dict(booked)  # the refused request left no record, the admitted one did
    total = sum(cost for _, cost in booked)
    assert to_nanos(data["total_usd"]) == total
    (dept,) = data["departments"]
    assert dept["requests_today"] == len(booked)
    daily = next(b for b in dept["budgets"] if b["period"] == "daily")
    assert to_nanos(daily["spent_dollars"]) == total  # the budget counter got the queued spend
    assert daily["reserved_dollars"] == 0
    assert settled_backlog(proxy, 0) == 0


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_outage_with_an_uncached_key_is_a_503_not_an_internal_error(
    switch: BackgroundSwitch, redis_prefix: str, start_proxy: ProxyStarter,
    mock_upstream: ServerThread, fail_mode: str,
) -> None:
    """Keys live in Redis (cached 5 s per replica): a key not looked up just before the outage
    can't be checked, in either fail mode. The client must get a retryable 503, not a 500."""
    proxy = start(start_proxy, switch, redis_prefix, fail_mode)
    switch.down()
    prompt = unique("unknown key during the outage")
    r = timed_chat(proxy, prompt, SALES)
    assert r.status_code == 503, r.text
    assert r.json() == {"error": {"message": "The key store is unreachable; retry shortly.",
                                  "type": "api_error", "param": None,
                                  "code": "key_store_unavailable"}}
    assert not upstream_saw(mock_upstream, prompt)
    switch.up()
    answered(chat(proxy, unique("unknown key after the outage"), SALES))


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_requests_after_a_redis_restart_with_no_traffic_in_between_succeed(
    switch: BackgroundSwitch, redis_prefix: str, start_proxy: ProxyStarter, fail_mode: str,
) -> None:
    """Redis closed every pooled connection while the proxy was idle (a restart, a failover):
    the first request on each of them must not fail."""
    proxy = start(start_proxy, switch, redis_prefix, fail_mode)
    before = answered(chat(proxy, unique("before the restart")))
    wait_until_booked(proxy, 1)
    switch.down()
    switch.up()
    after = answered(chat(proxy, unique("after the restart")))  # spend store's connection
    data = spend_once_flushed(proxy, [before[0], after[0]])  # key store's connection (admin key)
    assert to_nanos(data["total_usd"]) == before[1] + after[1]
