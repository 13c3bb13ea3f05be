"""The built-in mock upstream: a body it cannot read is a 400 as at OpenAI, not a 500; and it
behaves like a model for pages and agent loops: tool calls whose arguments follow the tool's
schema (streamed too), a text answer once a tool result is in, and `n` choices when streaming."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from proxy.demo.upstream import create_mock_app
from tests.support.servers import ServerThread

BAD_BODIES: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b"[]"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user"}], "n": "x"}'),
    ("/v1/completions", b"not json"),
    ("/v1/responses", b"[]"),
    ("/v1/embeddings", b"[]"),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
def test_unreadable_bodies_are_400(mock_upstream: ServerThread, path: str, body: bytes) -> None:
    r = httpx.post(mock_upstream.url + path, content=body)
    assert r.status_code == 400
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_garbage_on_passthrough_endpoints_is_never_a_5xx(proxy: ServerThread) -> None:
    """Found by the fuzz run: a non-chat body with a 'messages' field of non-objects was sized as
    chat messages (500 internal_error in accounting), and a body the upstream could not read was
    a 500 there, which counted as the provider failing and cooled it down for everyone (502)."""
    eng = {"authorization": "Bearer sk-demo-engineering"}
    for _ in range(5):
        bad = httpx.post(proxy.url + "/v1/responses", content=b'{"model": "gpt-4o-mini", '
                         b'"input": "x", "stream_options": 5, "metadata": [], "n": 2, '
                         b'"tools": {"a": 1}, "messages": [1]}', headers=eng)
        assert bad.status_code < 500, bad.text
    ok = httpx.post(proxy.url + "/v1/chat/completions", headers=eng,
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "required": ["city", "unit"], "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1}, "hourly": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}}}}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}


async def post(body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_mock_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        return await client.post("/v1/chat/completions", json=body)


def events(resp: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in resp.text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


def streamed_calls(chunks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Tool calls put together from their deltas, as the OpenAI SDK does, by choice index."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for part in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(choice["index"], {"name": "", "arguments": "", "id": None})
                call["id"] = call["id"] or part.get("id")
                call["name"] += part["function"].get("name") or ""
                call["arguments"] += part["function"].get("arguments") or ""
    return calls


def check_weather_args(raw: str) -> None:
    args = orjson.loads(raw)
    assert isinstance(args["city"], str) and args["city"]
    assert args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args.get("days", 1), int) and args.get("days", 1) >= 1
    assert set(args) <= {"city", "unit", "days", "hourly", "tags", "where"}


async def test_tool_call_arguments_follow_the_schema() -> None:
    resp = await post({"model": "gpt-4o-mini", "tools": [WEATHER],
                       "messages": [{"role": "user", "content": "weather in Paris?"}]})
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    check_weather_args(call["function"]["arguments"])


async def test_tool_choice_names_the_tool_to_call() -> None:
    resp = await post({"model": "gpt-4o-mini", "tools": [WEATHER, CLOCK],
                       "tool_choice": {"type": "function", "function": {"name": "get_time"}},
                       "messages": [{"role": "user", "content": "time?"}]})
    call = resp.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_time"
    assert isinstance(orjson.loads(call["function"]["arguments"])["tz"], str)


async def test_streamed_tool_call_is_assembled_from_deltas() -> None:
    resp = await post({"model": "gpt-4o-mini", "tools": [WEATHER], "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "weather in Paris?"}]})
    chunks = events(resp)
    calls = streamed_calls(chunks)
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["id"].startswith("call_")
    check_weather_args(calls[0]["arguments"])
    finishes = [c["finish_reason"] for ch in chunks for c in ch["choices"]
                if c.get("finish_reason")]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_result_gets_a_text_answer_so_the_agent_loop_ends(stream: bool) -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    resp = await post({"model": "gpt-4o-mini", "tools": [WEATHER], "stream": stream,
                       "messages": messages})
    if stream:
        chunks = events(resp)
        assert streamed_calls(chunks) == {}
        text = "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"])
        finishes = [c["finish_reason"] for ch in chunks for c in ch["choices"]
                    if c.get("finish_reason")]
    else:
        choice = resp.json()["choices"][0]
        assert "tool_calls" not in choice["message"]
        text, finishes = choice["message"]["content"], [choice["finish_reason"]]
    assert "get_weather" in text and '{"temp": 21}' in text
    assert finishes == ["stop"]


async def test_streaming_honours_n() -> None:
    resp = await post({"model": "gpt-4o-mini", "n": 3, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "hello"}]})
    chunks = events(resp)
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (
                choice["delta"].get("content") or "")
    assert sorted(texts) == [0, 1, 2]
    assert len(set(texts.values())) == 3
    whole = (await post({"model": "gpt-4o-mini", "n": 3,
                         "messages": [{"role": "user", "content": "hello"}]})).json()
    assert [c["message"]["content"] for c in whole["choices"]] == [texts[i] for i in range(3)]
    assert chunks[-1]["usage"] == whole["usage"]
