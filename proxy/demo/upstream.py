"""A deterministic mock OpenAI server: answers, streams, usage, and faults on demand.

Faults come from a queue set with `POST /_mock/faults {"fault": "...", "times": N}` or from a
`#fault:<name>` marker in the last user message. Faults: 429 (Retry-After: 1), 500, 503,
slow (first byte after `delay_ms`, default 300), slow_stream (`delay_ms` between SSE events),
cut (stream stops half-way, no usage, no [DONE]), invalid_json, hang (never answers), 400, 401,
403. A reply set with `POST /_mock/faults {"reply": "same", "times": N}` is the whole text of
the next N chat answers (non-streamed): how tests script the cache's LLM judge. With `api_keys`
set (a provider's credentials), any other `Authorization` gets OpenAI's 401.

With `tools` it answers like a model in an agent loop: a tool call (streamed as deltas too) whose
arguments follow the tool's JSON schema, then a text answer once the last message is a tool
result. `n` choices are returned, and streamed one after the other.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

WORDS = (
    "the answer depends on context but here is a clear and short explanation with an example "
    "that covers the main points and a caveat worth knowing before you decide"
).split()
FAULT_MARK = re.compile(r"#fault:([a-z0-9_]+)")
MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-3.5-turbo",
    "o3-mini",
    "mixtral-8x7b",
    "llama-3.1-8b",
    "text-embedding-3-small",
)


@dataclass
class MockState:
    faults: deque[tuple[str, int]] = field(default_factory=deque)
    replies: deque[tuple[str, int]] = field(default_factory=deque)  # (text, times)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    received: int = 0  # requests so far: each recorded one carries its number as `seq`
    delay_ms: int = 300
    answer_words: int = 24
    streams_completed: int = 0
    streams_aborted: int = 0
    api_keys: frozenset[str] = frozenset()  # empty: any key (or none) is accepted

    def next_fault(self, prompt: str) -> str | None:
        marked = FAULT_MARK.search(prompt)
        if marked:
            return marked.group(1)
        return _take(self.faults)

    def next_reply(self) -> str | None:
        return _take(self.replies)


def _take(queue: deque[tuple[str, int]]) -> str | None:
    """The head of a queue of (item, times left), used once more."""
    if not queue:
        return None
    item, times = queue[0]
    if times <= 1:
        queue.popleft()
    else:
        queue[0] = (item, times - 1)
    return item


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    prompt = body.get("prompt") or body.get("input") or ""
    return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def answer_for(prompt: str, words: int, index: int = 0, max_tokens: int | None = None) -> str:
    """Deterministic answer: same prompt -> same text; different prompts -> different text.
    Never longer than max_tokens (at the mock's 4 characters a token), like a real model."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    picked = [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(words)]
    text = f"Mock answer {digest[:4].hex()}: " + " ".join(picked) + "."
    return text[: max_tokens * 4] if max_tokens else text


def finish_reason_of(prompt: str, words: int, index: int, max_tokens: int | None) -> str:
    """"length" when max_tokens cut the answer short, like a real model; else "stop"."""
    if max_tokens and len(answer_for(prompt, words, index)) > max_tokens * 4:
        return "length"
    return "stop"


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


def _usage(body: dict[str, Any], completion: int) -> dict[str, Any]:
    prompt = sum(count_tokens(_text_of(m.get("content"))) + 4 for m in body.get("messages") or [])
    prompt = prompt or count_tokens(last_user_text(body))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function a model would call now: none once a tool result is the last message (an
    agent loop then gets its text answer and ends), none for tool_choice "none", the named one
    for a forced tool_choice, else the first tool."""
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    choice = body.get("tool_choice")
    if not tools or choice == "none" or last.get("role") == "tool":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == wanted), tools[0])
    return tools[0]


def value_for(schema: Any, seed: str) -> Any:
    """A value that validates against a (simple) JSON schema, made from the prompt's words."""
    if not isinstance(schema, dict):
        return seed
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        props: dict[str, Any] = schema.get("properties") or {}
        return {name: value_for(sub, seed) for name, sub in props.items()}
    if kind == "array":
        return [value_for(schema.get("items"), seed)] * max(1, int(schema.get("minItems", 1)))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(1, int(low) + 1) if isinstance(low, int | float) else 1
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return seed or "mock"


def tool_call(tool: dict[str, Any], prompt: str) -> dict[str, Any]:
    seed = " ".join(re.findall(r"\w+", prompt)[-3:])
    args = value_for(tool.get("parameters") or {"type": "object"}, seed)
    name = str(tool.get("name") or "tool")
    digest = hashlib.sha256(f"{name}:{prompt}".encode()).hexdigest()[:12]
    return {"id": "call_" + digest, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}


def tool_answer(body: dict[str, Any], text: str) -> str:
    """After a tool result: the answer quotes what the tool returned, like a model would."""
    messages = body.get("messages") or []
    results = [_text_of(m.get("content")) for m in messages if m.get("role") == "tool"]
    names = [c.get("function", {}).get("name", "tool") for m in messages
             for c in (m.get("tool_calls") or []) if m.get("role") == "assistant"]
    used = names[-1] if names else "the tool"
    return f"Based on {used}: {results[-1] if results else ''}. {text}"


def answer_text(body: dict[str, Any], prompt: str, words: int, index: int) -> str:
    text = answer_for(prompt, words, index, _max_tokens(body))
    messages = body.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return tool_answer(body, text)
    return text


def _choice_message(body: dict[str, Any], text: str, prompt: str) -> dict[str, Any]:
    tool = chosen_tool(body)
    if tool is not None:
        return {"role": "assistant", "content": None, "tool_calls": [tool_call(tool, prompt)]}
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        return {"role": "assistant", "content": orjson.dumps({"answer": text}).decode()}
    return {"role": "assistant", "content": text}


def completion_body(body: dict[str, Any], prompt: str, words: int) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    choices, completion = [], 0
    for i in range(n):
        text = answer_text(body, prompt, words, i)
        message = _choice_message(body, text, prompt)
        completion += count_tokens(message["content"] or orjson.dumps(message).decode())
        choice: dict[str, Any] = {
            "index": i,
            "message": message,
            "finish_reason": "tool_calls" if message.get("tool_calls")
            else finish_reason_of(prompt, words, i, _max_tokens(body)),
        }
        if body.get("logprobs"):
            choice["logprobs"] = {
                "content": [
                    {"token": w, "logprob": -0.1, "bytes": None, "top_logprobs": []}
                    for w in text.split()[:5]
                ]
            }
        choices.append(choice)
    return {
        "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:20],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_mock",
        "choices": choices,
        "usage": _usage(body, completion),
    }


def choice_deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The deltas a model streams for one choice's message: text in word pieces, or a tool call
    (id and name first, then its arguments in pieces)."""
    calls = message.get("tool_calls")
    if not calls:
        pieces = re.findall(r"\S+\s*", message["content"] or "")
        return [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces)]
    call = calls[0]
    head = {"index": 0, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}
    raw = call["function"]["arguments"]
    parts = [raw[i:i + 12] for i in range(0, len(raw), 12)]
    return [{"role": "assistant", "content": None, "tool_calls": [head]},
            *({"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in parts)]


def stream_events(body: dict[str, Any], prompt: str, words: int) -> list[bytes]:
    whole = completion_body(body, prompt, words)
    base = {
        "id": whole["id"],
        "object": "chat.completion.chunk",
        "created": whole["created"],
        "model": body.get("model"),
        "system_fingerprint": "fp_mock",
    }
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}

    def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra, **more}) + b"\n\n"

    events = []
    for choice in whole["choices"]:  # one choice after the other, as `n` streams do
        i = choice["index"]
        events += [event([{"index": i, "delta": d, "finish_reason": None}])
                   for d in choice_deltas(choice["message"])]
        events.append(event([{"index": i, "delta": {}, "finish_reason": choice["finish_reason"]}]))
    if include_usage:
        events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": whole["usage"]})
                      + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    payload = {
        "error": {
            "message": message,
            "type": "server_error"
            if status >= 500
            else "rate_limit_error"
            if status == 429
            else "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def _refused(request: Request, state: MockState) -> Response | None:
    """OpenAI's answer to a wrong key, when this mock stands for a provider with known keys."""
    if not state.api_keys:
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key in state.api_keys:
        return None
    payload = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                         "param": None, "code": "invalid_api_key"}}
    return Response(orjson.dumps(payload), 401, media_type="application/json")


async def _fault_response(fault: str, state: MockState) -> Response | None:
    if fault == "429":
        return _error(429, "Rate limit reached (mock)", {"retry-after": "1"})
    if fault in ("500", "503", "400", "401", "403"):
        return _error(int(fault), f"Mock fault {fault}")
    if fault == "invalid_json":
        return Response(b"{not json", 200, media_type="application/json")
    if fault == "hang":
        await asyncio.sleep(3600)
    if fault == "slow":
        await asyncio.sleep(state.delay_ms / 1000)
    return None


async def _received(request: Request) -> tuple[MockState, dict[str, Any], Response | None]:
    """The mock's state and the request's body, recorded; a refusal when the key is wrong."""
    state: MockState = request.app.state.mock
    body = orjson.loads(await request.body())
    state.received += 1
    state.requests.append({"path": request.url.path, "headers": dict(request.headers),
                           "body": body, "seq": state.received})
    return state, body, _refused(request, state)


async def _begin(request: Request) -> tuple[MockState, dict[str, Any], str, str | None,
                                          Response | None]:
    """Receive a generation request: state, body, prompt, the fault it asked for, and the
    response to send at once instead of an answer (a refused key or a fault's own response)."""
    state, body, refused = await _received(request)
    prompt = last_user_text(body)
    if refused is not None:
        return state, body, prompt, None, refused
    fault = state.next_fault(prompt)
    return state, body, prompt, fault, (await _fault_response(fault, state) if fault else None)


async def chat(request: Request) -> Response:
    state, body, prompt, fault, early = await _begin(request)
    if early is not None:
        return early
    words = int(body.get("max_tokens") or 0) or state.answer_words
    words = min(words, state.answer_words)
    if not body.get("stream"):
        completion = completion_body(body, prompt, words)
        reply = state.next_reply()
        if reply is not None:
            completion["choices"] = [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": reply}}]
            completion["usage"] = _usage(body, count_tokens(reply))
        return Response(orjson.dumps(completion), media_type="application/json")
    events = stream_events(body, prompt, words)
    if fault == "cut":
        events = events[: len(events) // 2]

    gap = state.delay_ms / 1000 if fault == "slow_stream" else 0.0

    async def gen() -> AsyncIterator[bytes]:
        finished = False
        try:
            for ev in events:
                yield ev
                await asyncio.sleep(gap)
            finished = True
        finally:
            if finished:
                state.streams_completed += 1
            else:
                state.streams_aborted += 1

    return StreamingResponse(gen(), media_type="text/event-stream")


async def embeddings(request: Request) -> Response:
    state, body, refused = await _received(request)
    if refused is not None:
        return refused
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    data = []
    for i, item in enumerate(items):
        digest = hashlib.sha256(str(item).encode()).digest()
        data.append(
            {"object": "embedding", "index": i, "embedding": [(b - 128) / 128 for b in digest[:16]]}
        )
    tokens = sum(count_tokens(str(x)) for x in items)
    return Response(
        orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        ),
        media_type="application/json",
    )


async def completions(request: Request) -> Response:
    state, body, prompt, fault, early = await _begin(request)
    if early is not None:
        return early
    text = answer_for(prompt, state.answer_words)
    usage = {
        "prompt_tokens": count_tokens(prompt),
        "completion_tokens": count_tokens(text),
        "total_tokens": count_tokens(prompt) + count_tokens(text),
    }
    if request.url.path.endswith("/responses") and body.get("stream"):
        events = response_events(body, text, usage)
        if fault == "cut":
            events = events[: len(events) // 2]
        return StreamingResponse(iter(events), media_type="text/event-stream")
    if request.url.path.endswith("/responses"):
        payload: dict[str, Any] = {
            "id": "resp_mock",
            "object": "response",
            "model": body.get("model"),
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text}],
                }
            ],
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
            },
        }
    else:
        payload = {
            "id": "cmpl-mock",
            "object": "text_completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": usage,
        }
    return Response(orjson.dumps(payload), media_type="application/json")


def response_events(body: dict[str, Any], text: str, usage: dict[str, int]) -> list[bytes]:
    """Responses API streaming: typed events, no [DONE]; usage in response.completed."""

    def event(kind: str, data: dict[str, Any]) -> bytes:
        return (
            b"event: "
            + kind.encode()
            + b"\ndata: "
            + orjson.dumps({"type": kind, **data})
            + b"\n\n"
        )

    response: dict[str, Any] = {
        "id": "resp_mock",
        "object": "response",
        "model": body.get("model"),
        "status": "in_progress",
        "output": [],
    }
    events = [event("response.created", {"response": response})]
    events += [
        event(
            "response.output_text.delta",
            {"item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": piece},
        )
        for piece in re.findall(r"\S+\s*", text)
    ]
    done = {
        **response,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_mock",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
    }
    events.append(event("response.completed", {"response": done}))
    return events


async def models(request: Request) -> Response:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def set_faults(request: Request) -> Response:
    state: MockState = request.app.state.mock
    body = orjson.loads(await request.body())
    if body.get("clear"):
        state.faults.clear()
        state.replies.clear()
    if body.get("fault"):
        state.faults.append((str(body["fault"]), int(body.get("times", 1))))
    if body.get("reply") is not None:
        state.replies.append((str(body["reply"]), int(body.get("times", 1))))
    if "delay_ms" in body:
        state.delay_ms = int(body["delay_ms"])
    return Response(orjson.dumps({"queued": list(state.faults)}), media_type="application/json")


async def stats(request: Request) -> Response:
    state: MockState = request.app.state.mock
    return Response(
        orjson.dumps(
            {
                "streams_completed": state.streams_completed,
                "streams_aborted": state.streams_aborted,
                "requests": len(state.requests),
            }
        ),
        media_type="application/json",
    )


async def recorded(request: Request) -> Response:
    return Response(
        orjson.dumps(list(request.app.state.mock.requests)[-50:]), media_type="application/json"
    )


async def _unreadable(request: Request, exc: Exception) -> Response:
    """A body the mock cannot read is the client's 400, as on OpenAI: a 500 here would count as
    the provider failing and cool it down for every department (faults are the way to get 5xx)."""
    return _error(400, f"We could not parse the JSON body of your request: {exc}")


def create_mock_app(state: MockState | None = None) -> Starlette:
    app = Starlette(
        exception_handlers={
            exc: _unreadable
            for exc in (orjson.JSONDecodeError, TypeError, ValueError, AttributeError, KeyError)
        },
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/responses", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_mock/faults", set_faults, methods=["POST"]),
            Route("/_mock/requests", recorded, methods=["GET"]),
            Route("/_mock/stats", stats, methods=["GET"]),
        ]
    )
    app.state.mock = state or MockState()
    return app
