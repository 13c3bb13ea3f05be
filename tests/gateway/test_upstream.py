"""The upstream client against a real HTTP server: error statuses and their Retry-After."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from aiohttp import web

from proxy.config.providers import Provider
from proxy.errors import UpstreamHTTPError
from proxy.gateway.upstream import UpstreamClient, UpstreamTarget


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
    (formatdate(time.time() + 120, usegmt=True), 100.0, 121.0),  # an HTTP date, as RFC 9110 allows
])
async def test_retry_after_seconds_or_http_date(header: str, low: float, high: float) -> None:
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
