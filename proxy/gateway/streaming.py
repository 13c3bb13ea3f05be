"""Relay an upstream SSE stream as bytes, reading usage from the final events on the way.

Bytes are passed through untouched except: the upstream `[DONE]` is replaced by ours after the
accounting is known, the usage event is dropped when only the proxy asked for it, and one final
event (the usage event, else the last finish chunk) gains a `meterline` field with cost and
budget. After the first byte the status can't change, so failures end with an error event.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.errors import ProxyError, UpstreamTimeout, UpstreamUnavailable, sse_error_event

log = logging.getLogger(__name__)

# Headers of every SSE answer: no caching, and no buffering in nginx-style proxies in front.
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]"
# a usage object / a finish reason; with stream_options.include_usage every chunk before the
# last carries "usage":null and "finish_reason":null, which these leave alone
USAGE = re.compile(rb'"usage"\s*:\s*\{')
FINISH = re.compile(rb'"finish_reason"\s*:\s*"')


@dataclass
class StreamOutcome:
    """What a relayed stream produced; handed to the accounting step once."""

    chunks: list[bytes] = field(default_factory=list)  # events as the client received them
    usage: dict[str, Any] | None = None
    complete: bool = False  # upstream sent [DONE]
    error: ProxyError | None = None
    first_byte_at: float | None = None  # perf_counter of the first upstream byte
    held: bytes | None = None  # last finish/usage event, sent only after `finish` has run


# settles the stream: the `meterline` info for the last event, and work for after it is sent
Finish = Callable[[StreamOutcome], Awaitable[tuple[dict[str, Any], Callable[[], None]]]]


def _is_usage(event: bytes) -> bool:
    return USAGE.search(event) is not None


def _is_finish(event: bytes) -> bool:
    return FINISH.search(event) is not None


def _spaced(batch: bytes) -> bytes:
    """`data:{` / `data:[` lines as `data: {` / `data: [`: SSE makes the space optional, and the
    relay (and many clients) look for `data: `. Only line starts are touched: a newline byte
    can't occur inside a JSON event, and a batch starts at an event."""
    if b"\ndata:{" in batch or b"\ndata:[" in batch or batch[:6] in (b"data:{", b"data:["):
        batch = batch.replace(b"\ndata:{", b"\ndata: {").replace(b"\ndata:[", b"\ndata: [")
        if batch[:6] in (b"data:{", b"data:["):
            batch = b"data: " + batch[5:]
    return batch


def tail_start(batch: bytes) -> int:
    """Where the events at the end of `batch` that need a look begin: the run of finish,
    usage and [DONE] events (and comments or other non-data lines among them) that ends the
    batch. Content chunks before it pass as they are, unsplit: an answer can come in one
    batch, and the walk from the end looks at only a few events. `batch` ends with a blank
    line; returns len(batch) when its last data event is content."""
    start = len(batch)
    while start > 0:
        prev = batch.rfind(b"\n\n", 0, start - 2)
        begin = prev + 2 if prev >= 0 else 0
        event = batch[begin:start]
        if event.startswith(b"data: {") and not (_is_finish(event) or _is_usage(event)):
            break
        start = begin
    return start


def _with_meterline(event: bytes, info: dict[str, Any]) -> bytes:
    """The event with a `meterline` field added at the end of its JSON object. The upstream's
    bytes stay as they were (parsing and re-encoding could rewrite numbers); other SSE lines
    of the event (`id:`, `event:`) are kept."""
    lines = event.rstrip(b"\n").split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data: {"):
            body = line.rstrip()
            if body.endswith(b"}") and body[5:].strip() != b"{}":
                lines[i] = body[:-1] + b',"meterline":' + orjson.dumps(info) + b"}"
            else:
                payload = orjson.loads(body[5:])
                payload["meterline"] = info
                lines[i] = b"data: " + orjson.dumps(payload)
            break
    return b"\n".join(lines) + b"\n\n"


class SSERelay:
    """One upstream stream -> client bytes. `finish` runs exactly once, even on cancel."""

    def __init__(self, resp: aiohttp.ClientResponse, *, strip_usage: bool, finish: Finish,
                 spawn: Callable[[Coroutine[Any, Any, None]], None], provider: str,
                 raw: bool = False) -> None:
        self._resp = resp
        self._raw = raw  # Responses API and other streams without [DONE]: bytes as they come
        self._strip_usage = strip_usage
        self._finish = finish
        self._spawn = spawn
        self._provider = provider
        self._held: bytes | None = None  # event that will carry the meterline field
        self._finished = False
        self.ended = False  # the piece being yielded is the last one
        self.settling = False  # `finish` is running: a client that leaves must not cancel it
        self._after: Callable[[], None] | None = None  # from `finish`, run by `after_sent`
        self.outcome = StreamOutcome()

    def _route_event(self, event: bytes, out: list[bytes]) -> None:
        if event.startswith(DONE):
            self.outcome.complete = True
        elif event.startswith(b"data: {") and _is_usage(event):
            payload = orjson.loads(event[5:])
            self.outcome.usage = payload.get("usage")  # cumulative where sent on every chunk
            if not self._strip_usage:
                self._hold(event, out)
            elif payload.get("choices"):  # usage riding on a content chunk: keep the content
                out.append(event)
        elif self._strip_usage and event.startswith(b"data: {") and _is_finish(event):
            self._hold(event, out)
        else:
            out.append(event)

    def _hold(self, event: bytes, out: list[bytes]) -> None:
        if self._held is not None:
            out.append(self._held)
        self._held = self.outcome.held = event

    def _process(self, batch: bytes) -> bytes:
        batch = _spaced(batch)
        if self._raw:
            if b'"usage"' in batch:
                self._scan_raw_usage(batch)
            return batch
        start = tail_start(batch)
        if start == len(batch):
            return batch
        out: list[bytes] = [batch[:start]] if start else []
        for event in batch[start:].split(b"\n\n"):
            if event.strip():
                self._route_event(event + b"\n\n", out)
        return b"".join(out)

    def _scan_raw_usage(self, batch: bytes) -> None:
        for line in batch.split(b"\n"):
            if line.startswith(b"data: {") and b'"usage"' in line:
                payload = orjson.loads(line[5:])
                usage = payload.get("usage") or (payload.get("response") or {}).get("usage")
                if isinstance(usage, dict):
                    self.outcome.usage = usage

    async def _run_finish(self) -> dict[str, Any]:
        # While this runs, RelayResponse does not cancel the stream when the client goes away:
        # the spend is settled either way (what asyncio.shield would do, without a second task
        # and two more event-loop turns at the end of every stream).
        self._finished = self.settling = True
        try:
            info, self._after = await self._finish(self.outcome)
        finally:
            self.settling = False
        return info

    def _emit(self, data: bytes) -> bytes:
        self.outcome.chunks.append(data)
        return data

    async def events(self) -> AsyncIterator[bytes]:
        buf = b""
        try:
            async for chunk in self._resp.content.iter_any():
                if self.outcome.first_byte_at is None:
                    self.outcome.first_byte_at = time.perf_counter()
                buf += chunk
                if b"\r" in buf:  # CRLF framing (sse-starlette servers): events end in \n\n
                    buf = buf.replace(b"\r\n", b"\n")
                cut = buf.rfind(b"\n\n")
                if cut < 0:
                    continue
                batch, buf = buf[: cut + 2], buf[cut + 2:]
                data = self._process(batch)
                if data:
                    yield self._emit(data)
            if buf.strip():
                data = self._process(buf + b"\n\n")
                if data:
                    yield self._emit(data)
            if self._raw:
                self.outcome.complete = True
            if not self.outcome.complete:
                self.outcome.error = UpstreamUnavailable(
                    f"Upstream {self._provider} closed the stream before it finished")
        except TimeoutError:
            self.outcome.error = UpstreamTimeout(f"Upstream {self._provider} stream timed out")
        except orjson.JSONDecodeError:
            self.outcome.error = UpstreamUnavailable(
                f"Upstream {self._provider} sent an event that is not valid JSON")
        except aiohttp.ClientError as exc:
            self.outcome.error = UpstreamUnavailable(
                f"Upstream {self._provider} stream failed: {type(exc).__name__}")
        finally:
            if self.outcome.error is not None or not self.outcome.complete:
                self._resp.close()  # don't return a half-read connection to the pool
            else:
                self._resp.release()
            if not self._finished and (self.outcome.error is not None or not self.outcome.complete):
                self._finished = True
                self._spawn(self._finish_quietly())
        async for tail in self._tail():
            yield tail

    async def _tail(self) -> AsyncIterator[bytes]:
        """The stream's last piece, in one write: the held event and the error event, or the
        event with the meterline field and [DONE]. `ended` is set as it goes out."""
        if self.outcome.error is not None:
            self.ended = True
            yield self._emit((self._held or b"") + sse_error_event(self.outcome.error))
            return
        info = await self._run_finish()
        if self._raw:
            return
        if self._held is not None:
            final = _with_meterline(self._held, info)
        else:
            final = b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [],
                                              "meterline": info}) + b"\n\n"
        self.ended = True
        yield self._emit(final + DONE + b"\n\n")

    async def _finish_quietly(self) -> None:
        _, self._after = await self._finish(self.outcome)
        self.after_sent()

    def after_sent(self) -> None:
        """Run what `finish` left for after the last byte (the metrics), once."""
        after, self._after = self._after, None
        if after is not None:
            try:
                after()
            except Exception:  # the client has its answer: log, never break the response
                log.exception("counting a finished stream failed")


class RelayResponse(StreamingResponse):
    """A StreamingResponse that stops (and so cancels the upstream read) when the client goes
    away, with one plain asyncio task watching for the disconnect. Starlette does the same with
    an anyio task group and two tasks when the server speaks ASGI < 2.4 (uvicorn: 2.3), which
    costs more than the rest of a stream's first byte."""

    def __init__(self, relay: SSERelay, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(relay.events(), status_code, headers, media_type="text/event-stream")
        self.relay = relay

    async def stream_response(self, send: Send) -> None:
        """As Starlette's, but the relay's last piece goes out with the end of the body: one
        write for the last event, [DONE] and the chunked terminator instead of three."""
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        done = False
        async for chunk in self.body_iterator:
            if done:
                raise RuntimeError("stream yielded after its last piece")
            done = self.relay.ended
            await send({"type": "http.response.body", "body": chunk, "more_body": not done})
        if not done:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if not self.relay.settling:  # else the stream ends by itself once settled
                streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from outside (shutdown): not ours to swallow
            streaming.uncancel()
        finally:
            watcher.cancel()
            self.relay.after_sent()
