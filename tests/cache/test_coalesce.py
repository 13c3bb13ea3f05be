"""Identical requests that miss together go upstream once (cache.yaml `coalesce`), through the
real proxy on both cache backends, against the mock upstream."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.cache.test_semantic_cache import cache_yaml, upstream_calls
from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, fault


@pytest.fixture(name="start", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def start_fixture(request: pytest.FixtureRequest, start_proxy: ProxyStarter) -> Any:
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        overrides = {"redis_url": request.getfixturevalue("redis_url"),
                     "redis_prefix": request.getfixturevalue("redis_prefix")}

    def start(timeout_s: float = 3.0, **changes: Any) -> ServerThread:
        return start_proxy(edits={"cache.yaml": cache_yaml(**changes)}, timeout_s=timeout_s,
                           **overrides)

    return start


def burst(proxy: ServerThread, asks: list[tuple[str, str]], *, stream: bool = False,
          model: str = "gpt-4o") -> list[httpx.Response]:
    """Send (key, text) requests all at once; responses in the same order."""
    async def one(client: httpx.AsyncClient, key: str, text: str) -> httpx.Response:
        return await client.post(
            proxy.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "stream": stream,
                  "messages": [{"role": "user", "content": text}]})

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(one(client, k, t) for k, t in asks)))

    return asyncio.run(run())


ENG = "sk-demo-engineering"


def test_identical_requests_that_miss_together_go_upstream_once(
        start: Any, mock_upstream: ServerThread) -> None:
    proxy = start()
    text = f"How do I rotate a signing key {uuid.uuid4().hex[:8]}? #fault:slow"
    responses = burst(proxy, [(ENG, text)] * 6)
    assert [r.status_code for r in responses] == [200] * 6
    assert upstream_calls(mock_upstream, text) == 1
    answers = {r.json()["choices"][0]["message"]["content"] for r in responses}
    assert len(answers) == 1
    states = sorted(r.headers["x-meterline-cache"] for r in responses)
    assert states == ["hit-exact"] * 5 + ["miss"]
    waited = [r for r in responses if r.headers["x-meterline-cache"] == "hit-exact"]
    assert all(r.headers["x-meterline-cache-coalesced"] == "true" for r in waited)
    assert all(r.headers["x-meterline-cost-usd"] == "0.00000000" for r in waited)
    paid = next(r for r in responses if r.headers["x-meterline-cache"] == "miss")
    assert float(paid.headers["x-meterline-cost-usd"]) > 0
    assert "x-meterline-cache-coalesced" not in paid.headers


def test_requests_of_other_scopes_do_not_wait_for_each_other(
        start: Any, mock_upstream: ServerThread) -> None:
    """Another department (no shared scope) or another model is another answer."""
    proxy = start()
    text = f"What is our refund window {uuid.uuid4().hex[:8]}? #fault:slow"
    responses = burst(proxy, [(ENG, text), ("sk-demo-sales", text), ("sk-demo-marketing", text),
                              (ENG, text)], model="gpt-4o-mini")
    assert [r.status_code for r in responses] == [200] * 4
    # engineering twice (one waits), sales and marketing once each
    assert upstream_calls(mock_upstream, text) == 3
    assert [r.headers.get("x-meterline-cache-coalesced") for r in responses].count("true") == 1


def test_waiting_requests_go_upstream_themselves_when_the_first_one_fails(
        start: Any, mock_upstream: ServerThread) -> None:
    proxy = start(timeout_s=0.8)
    text = f"Summarise the incident {uuid.uuid4().hex[:8]}"
    fault(mock_upstream.url, "hang", times=1)  # the first upstream request never answers
    responses = burst(proxy, [(ENG, text)] * 4, model="gpt-4.1")  # one target: no fallback
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 504]
    assert upstream_calls(mock_upstream, text) == 4  # the hung one, then each waiter itself
    # the waiters waited for the first request's timeout before going upstream themselves
    assert all(r.elapsed.total_seconds() >= 0.7 for r in responses if r.status_code == 200)
    assert all("x-meterline-cache-coalesced" not in r.headers for r in responses)


def test_streams_do_not_wait_unless_configured(start: Any, mock_upstream: ServerThread) -> None:
    text = f"Explain idempotency keys {uuid.uuid4().hex[:8]} #fault:slow"
    proxy = start()
    responses = burst(proxy, [(ENG, text)] * 3, stream=True)
    assert [r.status_code for r in responses] == [200] * 3
    assert upstream_calls(mock_upstream, text) == 3

    text = f"Describe retry budgets for webhooks {uuid.uuid4().hex[:8]} #fault:slow"
    proxy = start(coalesce={"streams": True})
    responses = burst(proxy, [(ENG, text)] * 3, stream=True)
    assert [r.status_code for r in responses] == [200] * 3
    assert upstream_calls(mock_upstream, text) == 1
    bodies = [r.text for r in responses]
    assert all(b.endswith("data: [DONE]\n\n") for b in bodies)
    assert sorted(r.headers["x-meterline-cache"] for r in responses) == ["hit-exact"] * 2 + [
        "miss"]


def test_coalescing_can_be_turned_off(start: Any, mock_upstream: ServerThread) -> None:
    proxy = start(coalesce={"enabled": False})
    text = f"Where are the runbooks {uuid.uuid4().hex[:8]}? #fault:slow"
    responses = burst(proxy, [(ENG, text)] * 3)
    assert [r.status_code for r in responses] == [200] * 3
    assert upstream_calls(mock_upstream, text) == 3
