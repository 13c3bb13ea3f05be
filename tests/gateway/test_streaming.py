"""RelayResponse + SSERelay at the ASGI level: what goes out in which message, and a client that
leaves while the spend is being settled. The upstream is a stand-in for aiohttp's response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.gateway.streaming import RelayResponse, SSERelay, StreamOutcome

EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],'
    b'"usage":null}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
    b"\n\n",
    b"data: [DONE]\n\n",
]


class Content:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(0)
            yield piece


class Upstream:
    def __init__(self, pieces: list[bytes]) -> None:
        self.content = Content(pieces)
        self.released = self.closed = False

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


def relay_of(upstream: Upstream, finish: Any) -> SSERelay:
    return SSERelay(upstream, strip_usage=False, finish=finish,  # type: ignore[arg-type]
                    spawn=lambda coro: None, provider="mock")


def relay_body(pieces: list[bytes], finish: Any, strip_usage: bool = False) -> bytes:
    """Relay upstream `pieces` to a client that stays; what the client received."""
    async def run() -> bytes:
        sent: list[bytes] = []

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message.get("body", b""))

        relay = SSERelay(Upstream(pieces), strip_usage=strip_usage,  # type: ignore[arg-type]
                         finish=finish, spawn=lambda coro: None, provider="mock")
        await RelayResponse(relay, 200, {})({"type": "http"}, receive, send)  # type: ignore[arg-type]
        return b"".join(sent)

    return asyncio.run(run())


def test_last_event_done_and_end_of_body_go_out_in_one_message() -> None:
    counted: list[str] = []

    async def finish(outcome: StreamOutcome) -> tuple[dict[str, Any], Any]:
        return {"cost_usd": 0.001, "usage_seen": outcome.usage}, lambda: counted.append("metrics")

    async def run() -> list[dict[str, Any]]:
        upstream = Upstream([EVENTS[0], b"".join(EVENTS[1:])])
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()  # the client stays
            return {}

        async def send(message: dict[str, Any]) -> None:
            assert not counted  # metrics are counted after the last byte, not before
            sent.append(message)

        await RelayResponse(relay_of(upstream, finish), 200, {})(
            {"type": "http"}, receive, send)  # type: ignore[arg-type]
        assert upstream.released and not upstream.closed
        return sent

    sent = asyncio.run(run())
    assert counted == ["metrics"]
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["more_body"] for m in bodies] == [True, True, False]
    assert bodies[0]["body"] == EVENTS[0]
    assert bodies[1]["body"] == EVENTS[1]  # the finish chunk passes; the usage event is held
    last = bodies[2]["body"]
    usage_event, done, rest = last.split(b"\n\n")
    assert done == b"data: [DONE]" and rest == b""
    payload = orjson.loads(usage_event[len(b"data: "):])
    assert payload["usage"]["total_tokens"] == 4
    assert payload["meterline"] == {"cost_usd": 0.001, "usage_seen": payload["usage"]}


def test_a_client_that_leaves_while_spend_is_settled_does_not_cut_the_settlement() -> None:
    async def run() -> tuple[list[str], bool]:
        settling = asyncio.Event()
        redis_answers = asyncio.Event()
        steps: list[str] = []

        async def finish(outcome: StreamOutcome) -> tuple[dict[str, Any], Any]:
            steps.append("settle started")
            settling.set()
            await redis_answers.wait()  # a slow spend store
            steps.append("settled")
            return {"cost_usd": 0.001}, lambda: steps.append("counted")

        async def receive() -> dict[str, Any]:
            await settling.wait()
            asyncio.get_running_loop().call_later(0.05, redis_answers.set)
            return {"type": "http.disconnect"}  # the client is gone mid-settlement

        async def send(message: dict[str, Any]) -> None:
            return None

        upstream = Upstream([b"".join(EVENTS)])
        relay = relay_of(upstream, finish)
        await RelayResponse(relay, 200, {})({"type": "http"}, receive, send)  # type: ignore[arg-type]
        return steps, relay.ended

    steps, ended = asyncio.run(run())
    assert steps == ["settle started", "settled", "counted"]
    assert ended  # the tail was produced after the settlement, not cancelled away


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_read() -> None:
    async def run() -> tuple[Upstream, StreamOutcome | None]:
        seen: list[StreamOutcome] = []
        finished = asyncio.Event()

        async def finish(outcome: StreamOutcome) -> tuple[dict[str, Any], Any]:
            seen.append(outcome)
            return {}, finished.set  # counted on the quiet path too

        class Endless(Content):
            async def iter_any(self) -> AsyncIterator[bytes]:
                while True:
                    await asyncio.sleep(0.01)
                    yield EVENTS[0]

        upstream = Upstream([])
        upstream.content = Endless([])
        spawned: list[asyncio.Task[None]] = []
        relay = SSERelay(upstream, strip_usage=False, finish=finish,  # type: ignore[arg-type]
                         spawn=lambda coro: spawned.append(asyncio.ensure_future(coro)),
                         provider="mock")
        chunks = 0

        async def receive() -> dict[str, Any]:
            while chunks < 3:
                await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal chunks
            chunks += 1

        await asyncio.wait_for(
            RelayResponse(relay, 200, {})({"type": "http"}, receive, send),  # type: ignore[arg-type]
            timeout=5)
        await asyncio.wait_for(finished.wait(), timeout=5)
        return upstream, seen[0] if seen else None

    upstream, outcome = asyncio.run(run())
    assert upstream.closed and not upstream.released  # a half-read connection is not reused
    assert outcome is not None and not outcome.complete and outcome.chunks


def test_the_meterline_field_leaves_the_upstream_bytes_of_the_last_event_as_they_were() -> None:
    from proxy.gateway.streaming import _with_meterline

    usage = (b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
             b'"total_tokens":4},"logprob":-1.0E-5 ,"x":"}"}')
    for event, keep in [
        (usage + b"\n\n", usage),
        (b"id: 7\n" + usage + b"\nretry: 10\n\n", b"id: 7\n" + usage),
        (b"data: {}\n\n", b""),
    ]:
        out = _with_meterline(event, {"cost_usd": 0.5})
        assert out.endswith(b"\n\n")
        data = next(line for line in out.split(b"\n") if line.startswith(b"data: "))
        assert orjson.loads(data[len(b"data: "):])["meterline"] == {"cost_usd": 0.5}
        if keep:  # everything before the closing brace is the upstream's, byte for byte
            assert out.startswith(keep.rstrip(b"}"))
        assert out.count(b"\n") == event.count(b"\n")


def chunk(content: str | None, finish: str | None = None, usage: dict[str, int] | None = None,
          spaced: bool = False) -> bytes:
    payload = {"choices": [] if content is None and finish is None else
               [{"index": 0, "delta": {"content": content or ""}, "finish_reason": finish}],
               "usage": usage}
    text = orjson.dumps(payload)
    if spaced:
        text = text.replace(b'":', b'": ')
    return b"data: " + text + b"\n\n"


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_only_the_events_that_end_a_batch_are_looked_at() -> None:
    from proxy.gateway.streaming import tail_start

    content = chunk("a") + chunk('say "finish_reason":"stop" and "usage":{}')  # text, not keys
    cases = [
        (content, len(content)),  # all content: passes whole
        (content + chunk(None, "stop"), len(content)),
        (content + chunk(None, "stop") + chunk(None, usage=USAGE) + b"data: [DONE]\n\n",
         len(content)),
        (content + chunk(None, "stop", spaced=True) + b": ping\n\n"
         + chunk(None, usage=USAGE, spaced=True) + b"data: [DONE]\n\n", len(content)),
        (chunk(None, usage=USAGE) + b"data: [DONE]\n\n", 0),
        (chunk(None, "stop") + chunk("more from choice 1"), len(chunk(None, "stop")) + len(
            chunk("more from choice 1"))),
    ]
    for batch, expected in cases:
        assert tail_start(batch) == expected, batch


def test_usage_is_read_from_the_last_event_and_content_carrying_usage_is_kept() -> None:
    async def finish(outcome: StreamOutcome) -> tuple[dict[str, Any], Any]:
        return {"usage_seen": outcome.usage}, lambda: None

    # vLLM's continuous usage stats: every chunk carries the running usage
    running = [chunk("a", usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}),
               chunk("b", usage=USAGE), chunk(None, "stop", usage=USAGE), b"data: [DONE]\n\n"]
    body = relay_body([b"".join(running)], finish, strip_usage=True)
    events = [e for e in body.split(b"\n\n") if e]
    texts = [orjson.loads(e[6:]) for e in events[:-1]]
    assert [t["choices"][0]["delta"]["content"] for t in texts[:2]] == ["a", "b"]
    assert texts[-1]["meterline"]["usage_seen"] == USAGE
    assert events[-1] == b"data: [DONE]"


def test_an_upstream_that_writes_data_without_the_space_is_read_the_same() -> None:
    """`data:{...}` is valid SSE: its usage is read, its [DONE] ends the stream (no error
    event, no second [DONE]), and content that merely contains "data:{" is left alone."""
    seen: list[StreamOutcome] = []

    async def finish(outcome: StreamOutcome) -> tuple[dict[str, Any], Any]:
        seen.append(outcome)
        return {"cost_usd": 0.001}, lambda: None

    events = [chunk('write data:{"x":1} here'), chunk(None, "stop"), chunk(None, usage=USAGE),
              b"data: [DONE]\n\n"]
    raw = b"".join(e.replace(b"data: ", b"data:") for e in events)
    body = relay_body([raw[:40], raw[40:]], finish)
    assert seen[0].complete and seen[0].error is None and seen[0].usage == USAGE
    out = [e for e in body.split(b"\n\n") if e]
    assert out[-1] == b"data: [DONE]" and body.count(b"[DONE]") == 1
    assert b'"error"' not in body
    first = orjson.loads(out[0][len(b"data: "):])
    assert first["choices"][0]["delta"]["content"] == 'write data:{"x":1} here'
    assert orjson.loads(out[-2][len(b"data: "):])["meterline"] == {"cost_usd": 0.001}
