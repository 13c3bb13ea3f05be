"""Shared endpoint helpers (proxy/http.py): JSON in and out, bounded query numbers, body models.
`require_admin` needs the whole app and is covered by each package's api tests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Message

from proxy.errors import InvalidRequest, PayloadTooLarge
from proxy.http import MAX_ADMIN_BODY, json_body, json_response, number_param, parse_body


def request_with(*chunks: bytes, headers: dict[str, str] | None = None) -> Request:
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or (b"",))]

    async def receive() -> Message:
        return messages.pop(0)

    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw}, receive)


def test_json_response() -> None:
    response = json_response({"ok": True, "name": "café"}, 201)
    assert response.status_code == 201
    assert response.media_type == "application/json"
    assert orjson.loads(response.body) == {"ok": True, "name": "café"}
    assert json_response([]).status_code == 200


async def test_json_body_reads_an_object() -> None:
    assert await json_body(request_with(b'{"a": ', b'[1, "\xc3\xa9"]}')) == {"a": [1, "é"]}
    assert await json_body(request_with(b"")) == {}


@pytest.mark.parametrize(("raw", "message_start"), [
    (b"not json", "Request body is not valid JSON: "),
    (b"[1, 2]", "Request body must be a JSON object."),
    (b'"text"', "Request body must be a JSON object."),
    (b"null", "Request body must be a JSON object."),
])
async def test_json_body_rejects_what_is_not_an_object(raw: bytes, message_start: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await json_body(request_with(raw))
    assert info.value.message.startswith(message_start)
    assert info.value.code == "invalid_json" and info.value.status == 400


async def test_json_body_enforces_the_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        await json_body(request_with(b"{}", headers={"content-length": str(MAX_ADMIN_BODY + 1)}))
    with pytest.raises(PayloadTooLarge):
        await json_body(request_with(b'{"a": "', b"x" * 20, b'"}'), limit=16)
    assert await json_body(request_with(b'{"a": 1}'), limit=8) == {"a": 1}


@pytest.mark.parametrize(("params", "expected"), [
    ({}, 7.0),
    ({"n": ""}, 7.0),
    ({"n": "0"}, 0.0),
    ({"n": "10"}, 10.0),
    ({"n": "2.5"}, 2.5),
    ({"n": "1e1"}, 10.0),
])
def test_number_param_accepts_numbers_within_bounds(params: dict[str, str],
                                                    expected: float) -> None:
    assert number_param(params, "n", 7.0, 0, 10) == expected


@pytest.mark.parametrize(("raw", "include_low", "include_high", "bounds"), [
    ("-1", True, True, "from 0 to 10"),
    ("10.01", True, True, "from 0 to 10"),
    ("ten", True, True, "from 0 to 10"),
    ("nan", True, True, "from 0 to 10"),
    ("inf", True, True, "from 0 to 10"),
    ("0", False, True, "in (0, 10]"),
    ("10", True, False, "in [0, 10)"),
    ("0", False, False, "in (0, 10)"),
])
def test_number_param_rejects_out_of_bounds_with_a_400(raw: str, include_low: bool,
                                                       include_high: bool, bounds: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        number_param({"days": raw}, "days", 1, 0, 10, include_low=include_low,
                     include_high=include_high)
    assert info.value.to_dict() == {"error": {
        "message": f"Invalid 'days': expected a number {bounds}, got '{raw}'.",
        "type": "invalid_request_error", "param": "days", "code": "invalid_value"}}


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int = Field(default=1, ge=1)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]


def test_parse_body_returns_the_model() -> None:
    assert parse_body(Item, {"name": "ü"}) == Item(name="ü", size=1)


@pytest.mark.parametrize(("model", "body", "param", "code", "message_start"), [
    (Item, {}, "name", "invalid_value", "Invalid 'name': Field required."),
    (Item, {"name": "a", "size": 0}, "size", "invalid_value", "Invalid 'size': Input should be"),
    (Item, {"name": "a", "colour": "red"}, "colour", "unknown_parameter",
     "Unrecognized request argument supplied: 'colour'."),
    (Order, {"items": [{"name": "a"}, {"name": 3}]}, "items.name", "invalid_value",
     "Invalid 'items.name': Input should be a valid string."),
])
def test_parse_body_names_the_first_bad_field(model: type[BaseModel], body: dict[str, Any],
                                              param: str, code: str, message_start: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(model, body)
    assert (info.value.param, info.value.code) == (param, code)
    assert info.value.message.startswith(message_start)


class Either(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int | float = 0


def test_parse_body_names_a_union_field_itself() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(Either, {"amount": "ten"})
    assert info.value.param == "amount"
