"""Cached answers in canonical form and back out (proxy/cache/replay.py)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from proxy.cache.replay import (
    DONE,
    ReplayResponse,
    as_json,
    as_stream,
    assemble,
    cacheable_json,
    fill,
    new_id,
    template_of,
)

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def sse(*payloads: dict[str, Any], done: bool = True) -> list[bytes]:
    chunks = [b"data: " + orjson.dumps(p) + b"\n\n" for p in payloads]
    return chunks + ([DONE] if done else [])


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0,
          **more: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 11, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **more}


def completion(content: str = "Hello there, world", finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
            "system_fingerprint": "fp", "usage": USAGE,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}]}


def data_events(events: list[bytes]) -> list[dict[str, Any]]:
    assert events[-1] == DONE
    out = []
    for event in events[:-1]:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        out.append(orjson.loads(event[6:]))
    return out


def test_new_ids_are_unique_and_marked_as_cached() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("chatcmpl-cache-") for i in ids)


@pytest.mark.parametrize(("payload", "ok"), [
    (completion(), True),
    ({**completion(), "object": "chat.completion.chunk"}, False),
    ({**completion(), "choices": []}, False),
    ({**completion(), "choices": None}, False),
    ({**completion(), "choices": ["x"]}, False),
    ({**completion(), "choices": [{"index": 0, "finish_reason": None, "message": {}}]}, False),
    ({"object": "chat.completion"}, False),
])
def test_cacheable_json(payload: dict[str, Any], ok: bool) -> None:
    assert cacheable_json(payload) is ok


def test_assemble_joins_content_deltas() -> None:
    chunks = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
                 chunk({"content": "lo"}), chunk({}, "stop"))
    result = assemble(chunks, USAGE)
    assert result == {"id": "chatcmpl-1", "object": "chat.completion", "created": 11,
                      "model": "m", "system_fingerprint": None, "usage": USAGE,
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "Hello"}}]}


def test_assemble_handles_events_split_across_chunks() -> None:
    whole = b"".join(sse(chunk({"content": "Hi"}), chunk({}, "stop")))
    pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
    result = assemble(pieces, USAGE)
    assert result is not None and result["choices"][0]["message"]["content"] == "Hi"


def test_assemble_builds_tool_calls_and_orders_choices() -> None:
    chunks = sse(
        chunk({"content": "B"}, index=1),
        chunk({"tool_calls": [{"index": 0, "id": "call_1",
                               "function": {"name": "get_", "arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "time", "arguments": ":1}"}}]}),
        chunk({}, "tool_calls"), chunk({}, "stop", index=1),
    )
    result = assemble(chunks, USAGE)
    assert result is not None
    assert [c["index"] for c in result["choices"]] == [0, 1]
    first, second = result["choices"]
    assert first["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_time", "arguments": '{"a":1}'}}]
    assert first["message"]["content"] is None and first["finish_reason"] == "tool_calls"
    assert second["message"]["content"] == "B"


@pytest.mark.parametrize("chunks", [
    [],
    [DONE],
    sse(chunk({"content": "cut"})),  # no finish_reason: the stream did not complete
    sse(chunk({"content": "x"}), {"error": {"message": "boom"}}),
    [b"data: {not json\n\n"],
    [b"event: ping\n\n"] + sse(chunk({}, "stop")),
    sse(chunk({"content": "x"}) | {"choices": [{"index": 0, "delta": {"content": "x"},
                                                "logprobs": {"content": []},
                                                "finish_reason": "stop"}]}),
], ids=["empty", "only-done", "no-finish", "error-event", "bad-json", "non-data-event",
        "logprobs"])
def test_assemble_refuses_streams_that_cannot_be_replayed(chunks: list[bytes]) -> None:
    assert assemble(chunks, USAGE) is None


def test_as_json_gives_a_fresh_id_and_keeps_the_answer() -> None:
    stored = completion()
    out = orjson.loads(as_json(stored))
    assert out["id"] != stored["id"] and out["id"].startswith("chatcmpl-cache-")
    assert out["created"] >= stored["created"]
    assert out["choices"] == stored["choices"] and out["usage"] == USAGE
    assert stored["id"] == "chatcmpl-x"  # the stored answer is not mutated


def test_a_template_fills_a_fresh_id_each_time_and_keeps_the_rest_byte_for_byte() -> None:
    """A hit replays its entry's answer from a template parsed once per entry: every fill has
    its own id and the time, and otherwise the bytes (field order too) as_json always gave."""
    stored = completion()
    stored["choices"][0]["message"]["content"] = 'a "quoted" chatcmpl-x, 1700000000 — ünï 🙂'
    template = template_of(stored)
    first, second = orjson.loads(fill(template)), orjson.loads(fill(template))
    assert first["id"] != second["id"] and first["id"].startswith("chatcmpl-cache-")
    assert list(first) == list(stored)
    expected = orjson.dumps({**stored, "id": first["id"], "created": first["created"]})
    assert orjson.dumps(first) == expected
    assert abs(first["created"] - time.time()) < 5 and isinstance(first["created"], int)


@pytest.mark.parametrize("content", ["Hello there, world", "héllo  wörld 你好 🙂\nnext", "", "x"])
def test_as_stream_round_trips_through_assemble(content: str) -> None:
    stored = completion(content)
    events = as_stream(stored, include_usage=True, info={"cache": "hit"})
    again = assemble(events, USAGE)
    assert again is not None
    assert again["choices"][0]["message"]["content"] == (content or None)
    assert again["choices"][0]["finish_reason"] == "stop"


def test_as_stream_without_usage_puts_finish_and_info_on_the_last_event() -> None:
    events = data_events(as_stream(completion(), include_usage=False, info={"kind": "exact"}))
    assert len({e["id"] for e in events}) == 1
    assert all(e["object"] == "chat.completion.chunk" and "usage" not in e for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == \
        "Hello there, world"
    assert events[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert events[-1]["meterline"] == {"kind": "exact"}
    assert all("meterline" not in e for e in events[:-1])


def test_as_stream_with_usage_ends_with_a_usage_only_event() -> None:
    events = data_events(as_stream(completion(), include_usage=True, info={}))
    assert all(e["usage"] is None for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"] == USAGE
    assert events[-1]["meterline"] == {}


def test_as_stream_replays_tool_calls_with_indexes() -> None:
    stored = completion(finish="tool_calls")
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
             {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "[]"}}]
    stored["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
    events = as_stream(stored, include_usage=False, info={})
    again = assemble(events, USAGE)
    assert again is not None
    assert again["choices"][0]["message"]["tool_calls"] == calls


async def test_a_replayed_answers_bookkeeping_runs_after_its_body_even_if_sending_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    """A hit's spend release and record, hit counts and metrics ran before its answer was sent
    (the client waited ~0.1 ms for them); they now run once the body is out, and still run
    when the client is gone. A failure there is logged, never a second response."""
    events: list[str] = []

    async def after() -> None:
        events.append("bookkeeping")

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    response = ReplayResponse(b"{}", {"x-a": "1"}, "application/json", after)
    await response({"type": "http"}, receive, send)
    assert events == ["http.response.start", "http.response.body", "bookkeeping"]

    async def broken_send(message: dict[str, Any]) -> None:
        raise OSError("client gone")

    async def failing_after() -> None:
        events.append("failing bookkeeping")
        raise RuntimeError("spend down")

    with pytest.raises(OSError):
        await ReplayResponse(b"{}", {}, "application/json", after)(
            {"type": "http"}, receive, broken_send)
    assert events[-1] == "bookkeeping"
    await ReplayResponse(b"{}", {}, "application/json", failing_after)(
        {"type": "http"}, receive, send)
    assert "bookkeeping failed after a cache hit" in caplog.text
