"""Parsing and checking one inbound call: body limits, authentication, the fields we use."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.errors import (
    CLIENT_REQUEST_ID_KEY,
    HEADERS_KEY,
    REQUEST_ID_KEY,
    AuthenticationFailed,
    ClientClosedRequest,
    InvalidRequest,
    PayloadTooLarge,
)
from proxy.gateway.messages import validate_messages
from proxy.keys.store import Principal
from proxy.memo import MEMO_BODY_BYTES, BoundedMemo
from proxy.runtime.services import Services
from proxy.spend.records import UsageRecord

REQUEST_ID_HEADER = "x-request-id"


@dataclass
class Call:
    """One request on its way through the pipeline."""

    request_id: str
    endpoint: str  # "chat.completions" | "completions" | "embeddings" | "responses"
    path: str  # upstream path, e.g. "/chat/completions"
    started: float  # perf_counter at arrival
    principal: Principal
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)  # response headers we add
    upstream_s: float = 0.0
    record: UsageRecord | None = None
    inbound: Mapping[str, str] = field(default_factory=dict)  # request headers
    cache_state: Any = None  # proxy.cache.semantic_cache.Lookup, from lookup to store
    cache_probe: Any = None  # what SemanticCache.probe prepared, until the lookup goes on
    prompt_tokens: int | None = None  # estimated once, by routing, reused by budgets
    client_request_id: str | None = None  # the caller's x-request-id: correlation only
    # read on every step: plain attributes, set once in __post_init__
    stream: bool = field(init=False)
    department: str | None = field(init=False)  # None for admin keys: no budget applies
    department_name: str = field(init=False)  # how the call is shown and counted

    def __post_init__(self) -> None:
        self.stream = self.body.get("stream") is True
        self.department = self.principal.department
        self.department_name = self.department or (
            ADMIN_DEPARTMENT if self.principal.admin else "")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def overhead_ms(self) -> float:
        return max(0.0, (self.elapsed() - self.upstream_s) * 1000)


def header_map(request: Request) -> dict[str, str]:
    """Request headers as a plain dict, built once per request: Starlette's Headers scans the
    whole list on every lookup, and the request path looks up about ten names. ASGI servers
    send names in lower case; for a repeated header the last value wins."""
    scope = request.scope
    cached: dict[str, str] | None = scope.get(HEADERS_KEY)
    if cached is None:
        cached = scope[HEADERS_KEY] = {k.decode("latin-1"): v.decode("latin-1")
                                       for k, v in scope["headers"]}
    return cached


def new_request_id() -> str:
    """128 random bits: record keys, feedback and cache reports are addressed by this id, so it
    must be neither chosen by a client nor guessable from another response."""
    return "req_" + secrets.token_hex(16)


def request_id_of(request: Request) -> str:
    """The server's id for this request (made once, kept in the scope). The client's
    `x-request-id`, if printable and at most 128 characters, is kept beside it for correlation."""
    scope = request.scope
    rid: str | None = scope.get(REQUEST_ID_KEY)
    if rid is None:
        rid = scope[REQUEST_ID_KEY] = new_request_id()
        given = header_map(request).get(REQUEST_ID_HEADER, "")
        if 0 < len(given) <= 128 and given.isprintable():
            scope[CLIENT_REQUEST_ID_KEY] = given
    return rid


def client_request_id_of(request: Request) -> str | None:
    given: str | None = request.scope.get(CLIENT_REQUEST_ID_KEY)
    return given


def bearer_key(request: Request) -> str | None:
    headers = header_map(request)
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("api-key") or None


async def authenticate(request: Request, services: Services) -> Principal:
    raw = bearer_key(request)
    if raw is None:
        raise AuthenticationFailed(
            "Missing API key: send 'Authorization: Bearer <key>' or 'api-key: <key>'."
        )
    principal = await services.keys.authenticate(raw)
    if principal is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    return principal


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refused (413) as soon as it passes `limit` bytes."""
    declared = header_map(request).get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit} bytes.")
    # ASGI messages read directly: every body is read once, by this function (Starlette's
    # request.stream() is an async generator, a few microseconds more per request)
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientClosedRequest("The client closed the connection while sending the body.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json_body(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    raw = await read_body(request, limit)
    if not raw:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    return raw, parse_json_object(raw)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    return body


def _expect(body: dict[str, Any], name: str, types: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise InvalidRequest(
            f"Invalid type for '{name}': expected {what}, got {type(value).__name__}.",
            param=name,
            code="invalid_type",
        )


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


# OpenAI's own ceilings: budgets reserve n x max_tokens before the call, so one request with
# n = 10**6 would hold a department's whole budget and rate window (and ask that many answers)
COUNT_MAX = {"n": 128, "top_logprobs": 20}
TOKENS_MAX = 2**31 - 1


def _expect_count(body: dict[str, Any], name: str, minimum: int = 1) -> None:
    """An integer >= 1: budgets reserve from token limits and `n`, so 0 or less must not pass."""
    _expect(body, name, int, "an integer")
    value = body.get(name)
    if value is None:
        return
    if value < minimum:
        raise InvalidRequest(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    ceiling = COUNT_MAX.get(name, TOKENS_MAX)
    if value > ceiling:
        raise InvalidRequest(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {ceiling}, "
            f"but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "Invalid type for 'model': expected a non-empty string.",
            param="model",
            code="invalid_type",
        )
    return model


# request bodies (as received, up to MEMO_BODY_BYTES) that passed validate_chat: a body is
# parsed afresh from the same bytes each time, so it passes again (a cache hit's comes back)
_VALID_CHATS: BoundedMemo[bytes, bool] = BoundedMemo(256)


def validate_chat(body: dict[str, Any], raw: bytes | None = None) -> None:
    """Check only what the proxy itself uses; everything else goes upstream unchanged. `raw`:
    the bytes `body` was just parsed from; bytes that passed before are not checked again."""
    if raw is None or len(raw) > MEMO_BODY_BYTES:
        _check_chat(body)
    elif not _VALID_CHATS.get(raw):
        _check_chat(body)
        _VALID_CHATS.put(raw, True)


def _check_chat(body: dict[str, Any]) -> None:
    require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    validate_messages(messages)
    for name in CHAT_CHECKED.intersection(body):  # usually two or three of them
        if name in COUNT_FIELDS:
            _expect_count(body, name)
        elif name == "top_logprobs":
            _expect_count(body, name, minimum=0)
        else:
            types, what = CHAT_TYPES[name]
            _expect(body, name, types, what)


COUNT_FIELDS = frozenset({"n", "max_tokens", "max_completion_tokens", "max_output_tokens"})
CHAT_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "stream": (bool, "a boolean"),
    "temperature": ((int, float), "a number"),
    "stream_options": (dict, "an object"),
    "user": (str, "a string"),
    "tools": (list, "an array"),
    "logprobs": (bool, "a boolean"),
}
CHAT_CHECKED = frozenset(CHAT_TYPES) | (COUNT_FIELDS - {"max_output_tokens"}) | {"top_logprobs"}


def validate_passthrough(body: dict[str, Any]) -> None:
    require_model(body)
    _expect(body, "stream", bool, "a boolean")
    _expect(body, "stream_options", dict, "an object")  # read when the proxy asks for usage
    _expect(body, "user", str, "a string")  # kept on the usage record
    for name in ("n", "max_tokens", "max_output_tokens"):
        _expect_count(body, name)


MAX_USER_CHARS = 256  # a record is kept for the retention period: its size is ours to bound


def _clip(user: object) -> str | None:
    return user[:MAX_USER_CHARS] if isinstance(user, str) else None


def new_record(call: Call, model: str) -> UsageRecord:
    return UsageRecord(
        request_id=call.request_id,
        client_request_id=call.client_request_id,
        ts=time.time(),
        department=call.department_name,
        key_id=call.principal.key_id,
        user=_clip(call.body.get("user") or call.inbound.get("x-meterline-user")
                   or call.principal.user),
        endpoint=call.endpoint,
        model_requested=model,
        model_used=model,
        provider="",
        status=0,
        stream=call.stream,
    )
