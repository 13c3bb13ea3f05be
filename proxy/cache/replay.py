"""Cached answers in one canonical form (a chat.completion body), from JSON or from a complete
SSE stream, and back out as JSON or as a proper SSE stream."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from proxy.gateway.after_send import AfterSendResponse

log = logging.getLogger("meterline.cache")
_PIECES = re.compile(r"\S+\s*|\s+")
DONE = b"data: [DONE]\n\n"


def new_id() -> str:
    return "chatcmpl-cache-" + os.urandom(10).hex()  # uuid4().hex[:20] cost 3x as much


def cacheable_json(payload: dict[str, Any]) -> bool:
    choices = payload.get("choices")
    return (payload.get("object") == "chat.completion" and isinstance(choices, list)
            and bool(choices) and all(isinstance(c, dict) and c.get("finish_reason")
                                      for c in choices))


def _events(chunks: list[bytes]) -> list[dict[str, Any]] | None:
    """Parsed data events; None if the stream holds an error or anything unparseable."""
    out: list[dict[str, Any]] = []
    for event in b"".join(chunks).split(b"\n\n"):
        event = event.strip()
        if not event or event == b"data: [DONE]":
            continue
        if not event.startswith(b"data: {"):
            return None
        try:
            payload = orjson.loads(event[5:])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict) or "error" in payload:
            return None
        out.append(payload)
    return out


def _merge_delta(choice: dict[str, Any], delta: dict[str, Any]) -> None:
    message = choice["message"]
    if delta.get("role"):
        message["role"] = delta["role"]
    if delta.get("content"):
        message["content"] = (message.get("content") or "") + delta["content"]
    for call in delta.get("tool_calls") or []:
        calls = message.setdefault("tool_calls", [])
        index = int(call.get("index", len(calls)))
        while len(calls) <= index:
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        target = calls[index]
        target["id"] = call.get("id") or target["id"]
        function = call.get("function") or {}
        target["function"]["name"] += function.get("name") or ""
        target["function"]["arguments"] += function.get("arguments") or ""


def assemble(chunks: list[bytes], usage: dict[str, Any]) -> dict[str, Any] | None:
    """The chat.completion a complete stream amounts to; None if it can't be cached."""
    events = _events(chunks)
    if not events:
        return None
    choices: dict[int, dict[str, Any]] = {}
    for payload in events:
        for part in payload.get("choices") or []:
            if part.get("logprobs"):
                return None  # logprobs are not replayed
            index = int(part.get("index", 0))
            choice = choices.setdefault(index, {"index": index, "finish_reason": None,
                                                "message": {"role": "assistant", "content": None}})
            _merge_delta(choice, part.get("delta") or {})
            choice["finish_reason"] = part.get("finish_reason") or choice["finish_reason"]
    first = events[0]
    completion = {"id": first.get("id", ""), "object": "chat.completion",
                  "created": first.get("created", 0), "model": first.get("model"),
                  "system_fingerprint": first.get("system_fingerprint"),
                  "choices": [choices[i] for i in sorted(choices)], "usage": usage}
    return completion if cacheable_json(completion) else None


def as_json(completion: dict[str, Any]) -> bytes:
    return fill(template_of(completion))


# Placeholders for the two fields a replayed answer changes, unguessable by an answer's content
_MARK = uuid.uuid4().hex
_ID, _CREATED = f"{_MARK}-id", f"{_MARK}-created"
_HOLES = re.compile(f'"({_ID}|{_CREATED})"'.encode())
_ID_HOLE, _CREATED_HOLE = _ID.encode(), _CREATED.encode()

Template = tuple[bytes, ...]  # literal, hole name, literal, hole name, ..., literal


def template_of(completion: dict[str, Any]) -> Template:
    """A stored answer's JSON split around its `id` and `created`: an entry's answer never
    changes, so the cache parses and encodes it once, not on every hit (SemanticCache.serve)."""
    body = orjson.dumps({**completion, "id": _ID, "created": _CREATED})
    return tuple(_HOLES.split(body))


def fill(template: Template) -> bytes:
    """The answer with a fresh id and creation time, in the stored answer's field order."""
    answer_id = b'"' + new_id().encode() + b'"'
    created = b"%d" % time.time()
    return b"".join([answer_id if part == _ID_HOLE else created if part == _CREATED_HOLE
                     else part for part in template])


def as_stream(completion: dict[str, Any], include_usage: bool,
              info: dict[str, Any]) -> list[bytes]:
    """SSE events like an upstream stream, the `meterline` field on the last data event."""
    base = {"id": new_id(), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": completion.get("model"),
            "system_fingerprint": completion.get("system_fingerprint")}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra, **more}) + b"\n\n"

    events: list[bytes] = []
    finals: list[dict[str, Any]] = []
    for choice in completion["choices"]:
        index, message = choice["index"], choice["message"]
        events.append(event([{"index": index, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None}]))
        for piece in _PIECES.findall(message.get("content") or ""):
            events.append(event([{"index": index, "delta": {"content": piece},
                                  "finish_reason": None}]))
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            events.append(event([{"index": index, "delta": {"tool_calls": calls},
                                  "finish_reason": None}]))
        finals.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"]})
    last: dict[str, Any]
    if include_usage:
        events.append(event(finals))
        last = {**base, "choices": [], "usage": completion.get("usage"), "meterline": info}
    else:
        last = {**base, "choices": finals, "meterline": info}
    events.append(b"data: " + orjson.dumps(last) + b"\n\n")
    events.append(DONE)
    return events


class ReplayResponse(AfterSendResponse):
    """A cached answer whose bookkeeping (`after`: the spend release and record, hit counts,
    metrics) runs once the body is sent, as a JSON answer from upstream settles after its body."""

    def __init__(self, body: bytes, headers: dict[str, str], media_type: str,
                 after: Callable[[], Awaitable[None]]) -> None:
        super().__init__(body, 200, headers, media_type, after, "a cache hit")
