"""AfterSendResponse: the whole body, then its bookkeeping in the same task. It builds its
headers without Starlette's Response.__init__ (a cache hit's CPU): they must be the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.responses import Response

from proxy.gateway.after_send import AfterSendResponse


async def nothing() -> None:
    return None


@pytest.mark.parametrize("status", [200, 204, 304, 100, 429, 502])
@pytest.mark.parametrize("media", ["application/json", "text/event-stream",
                                   "text/plain; charset=latin-1"])
@pytest.mark.parametrize("headers", [
    {}, {"X-Upstream-Thing": "a", "x-meterline-cost-usd": "0.10000000"},
    {"content-type": "text/x", "Content-Length": "3"}, {"Content-Type": "application/x"}])
def test_headers_equal_starlettes_response(status: int, media: str,
                                           headers: dict[str, str]) -> None:
    ours = AfterSendResponse(b"abc", status, dict(headers), media, nothing, "a test")
    theirs = Response(b"abc", status, dict(headers), media_type=media)
    assert ours.raw_headers == theirs.raw_headers
    assert (ours.status_code, ours.body, ours.media_type) == (theirs.status_code, theirs.body,
                                                              media)
    assert dict(ours.headers) == dict(theirs.headers)


def test_the_body_is_sent_before_the_bookkeeping_and_a_failing_one_is_only_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[Any] = []

    async def after() -> None:
        events.append("after")
        raise RuntimeError("bookkeeping broke")

    async def send(message: Any) -> None:
        events.append(message["type"])

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    response = AfterSendResponse(b"{}", 200, {}, "application/json", after, "a test")
    asyncio.run(response({"type": "http"}, receive, send))
    assert events == ["http.response.start", "http.response.body", "after"]
    assert "bookkeeping failed after a test" in caplog.text
