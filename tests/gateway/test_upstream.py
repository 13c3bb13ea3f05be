"""The upstream client: error statuses and their Retry-After against a real HTTP server;
provider sessions across a config reload (issue 18 item 8)."""

from __future__ import annotations

import time
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from proxy.config.providers import Provider
from proxy.errors import UpstreamHTTPError
from proxy.gateway.upstream import UpstreamClient, UpstreamTarget
from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread

ADMIN = {"authorization": "Bearer sk-demo-admin"}
ENG = {"authorization": "Bearer sk-demo-engineering"}


def change_providers(proxy: ServerThread) -> None:
    """Edit every provider (a longer socket timeout) and reload: each one's session is replaced."""
    services = proxy.server.config.app.state.services
    path = Path(services.settings.config_dir) / "providers.yaml"
    providers = yaml.safe_load(path.read_text())
    for provider in providers["providers"].values():
        provider["timeout_s"] = provider.get("timeout_s", 3.0) + 1
    path.write_text(yaml.safe_dump(providers))
    r = httpx.post(proxy.url + "/admin/reload", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert "openai" in [c["name"] for c in r.json()["changes"]["providers"]["changed"]]


def stream_across_reload(proxy: ServerThread, mock: ServerThread, delay_ms: int) -> bytes:
    """A slow stream; the providers change and reload once its first bytes are in."""
    httpx.post(mock.url + "/_mock/faults", json={"delay_ms": delay_ms}).raise_for_status()
    body = {"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": f"stream through a reload {uuid.uuid4().hex[:6]} "
                                    "#fault:slow_stream"}]}
    chunks: list[bytes] = []
    try:
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=ENG,
                          timeout=15) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                if not chunks:
                    change_providers(proxy)
                chunks.append(chunk)
    finally:
        httpx.post(mock.url + "/_mock/faults", json={"delay_ms": 300})
    return b"".join(chunks)


def wait_until_drained(proxy: ServerThread, within_s: float = 5.0) -> int:
    upstream: Any = proxy.server.config.app.state.services.upstream
    deadline = time.monotonic() + within_s
    while upstream.draining and time.monotonic() < deadline:
        time.sleep(0.05)
    draining: int = upstream.draining
    return draining


def test_a_reload_that_changes_a_provider_lets_a_stream_in_flight_finish(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    """The old session used to be closed at once by the reload, cutting the stream (an error
    event instead of the rest of the answer). It is now closed after its last response."""
    proxy = start_proxy()
    streamed = stream_across_reload(proxy, mock_upstream, delay_ms=60)
    assert streamed.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in streamed and b'"finish_reason":"stop"' in streamed
    assert wait_until_drained(proxy) == 0  # and then the old session is closed
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "after the reload"}]})
    assert r.status_code == 200  # on the new session


@pytest.mark.parametrize("bound_s", [0.3])
def test_a_stream_that_outlives_the_drain_bound_is_closed(
        start_proxy: ProxyStarter, mock_upstream: ServerThread, bound_s: float) -> None:
    """The drain is bounded: a stream still running `drain_timeout_s` after the reload is cut
    (it ends with an error event and [DONE]) and the old session is closed."""
    proxy = start_proxy()
    proxy.server.config.app.state.services.upstream.drain_timeout_s = bound_s
    streamed = stream_across_reload(proxy, mock_upstream, delay_ms=150)  # ~4 s of events
    assert streamed.endswith(b"data: [DONE]\n\n")
    assert b'"error"' in streamed and b"upstream_unavailable" in streamed
    assert wait_until_drained(proxy) == 0


async def start_429(retry_after: str) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"retry-after": retry_after})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize(("header", "low", "high"), [
    ("7", 7.0, 7.0),
    ("date+120", 100.0, 121.0),  # an HTTP date two minutes ahead, as RFC 9110 allows
])
async def test_retry_after_seconds_or_http_date(header: str, low: float, high: float) -> None:
    if header == "date+120":
        header = formatdate(time.time() + 120, usegmt=True)
    runner, base = await start_429(header)
    provider = Provider(base_url=base)
    client = UpstreamClient({"p": provider})
    try:
        with pytest.raises(UpstreamHTTPError) as caught:
            target = UpstreamTarget("p", provider, "m", "sk-x")
            await client.open(target, "/chat/completions", b"{}", {})
    finally:
        await client.close()
        await runner.cleanup()
    assert caught.value.status == 429
    assert caught.value.retry_after is not None
    assert low <= caught.value.retry_after <= high
