"""Upstream streams framed in unusual but valid ways, and invalid events mid-stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.shapes import ENG, NO_CACHE, ask
from tests.support.servers import running


def sse_chunk(delta: dict[str, Any], finish: str | None = None,
              usage: dict[str, int] | None = None, end: bytes = b"\n\n") -> bytes:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
    payload: dict[str, Any] = {"id": "chatcmpl-x", "object": "chat.completion.chunk",
                               "model": "gpt-4o-mini", "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + end


def sse_upstream(events: list[bytes]) -> Any:
    """An OpenAI-compatible server that streams exactly `events` for any chat request."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def stream() -> Any:
        for event in events:
            yield event

    async def chat(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@contextmanager
def proxy_for(upstream_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from proxy.app import create_app
    from proxy.settings import Settings
    from tests.support.servers import make_config_dir

    with running(upstream_app) as upstream:
        config_dir = make_config_dir(tmp_path_factory.mktemp("rules"), upstream.url,
                                     edits={"cache.yaml": NO_CACHE, "routing.yaml": "rules: []\n"})
        settings = Settings.from_env({"MOCK_UPSTREAM_KEY": "sk-upstream-test"},
                                     config_dir=config_dir, demo=True)
        with running(create_app(settings)) as proxy:
            yield proxy.url


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_crlf_framed_upstream_stream_is_relayed_and_priced(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """sse-starlette based servers (e.g. llama-cpp-python) end events in CRLF CRLF: the relay
    used to wait for a b"\\n\\n" that never came, then crashed on the whole stream at once."""
    crlf = b"\r\n\r\n"
    events = [sse_chunk({"role": "assistant", "content": "Hello"}, end=crlf),
              sse_chunk({"content": " world"}, end=crlf), sse_chunk({}, "stop", end=crlf),
              sse_chunk({}, usage=USAGE, end=crlf), b"data: [DONE]" + crlf]
    with proxy_for(sse_upstream(events), tmp_path_factory) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-demo-engineering",
                               max_retries=0)
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=ask("crlf please"), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello world"
    assert all(c.usage is None for c in chunks)  # the proxy asked for usage, not the client
    info = (chunks[-1].model_extra or {})["meterline"]
    assert info["estimated"] is False and info["output_tokens"] == 2


def test_invalid_json_event_mid_stream_ends_with_error_event_and_done(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    events = [sse_chunk({"role": "assistant", "content": "Hi"}),
              b'data: {"choices": [], "usage": {not json\n\n', b"data: [DONE]\n\n"]
    with proxy_for(sse_upstream(events), tmp_path_factory) as url, httpx.stream(
            "POST", url + "/v1/chat/completions", headers=ENG, json={
                "model": "gpt-4o-mini", "messages": ask("garbage"), "stream": True}) as r:
        body = r.read()
    assert r.status_code == 200
    assert body.endswith(b'data: {"error":{"message":"Upstream openai sent an event that is not '
                         b'valid JSON","type":"api_error","param":null,'
                         b'"code":"upstream_unavailable"}}\n\ndata: [DONE]\n\n')


