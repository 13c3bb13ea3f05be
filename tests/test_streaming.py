"""RelayResponse + SSERelay at the ASGI level: what goes out in which message, and a client that
leaves while the spend is being settled. The upstream is a stand-in for aiohttp's response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.streaming import RelayResponse, SSERelay, StreamOutcome

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
