"""Message shapes (proxy/gateway/messages.py): a malformed message is a 400 naming the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.errors import InvalidRequest
from proxy.gateway.messages import validate_messages
from tests.support.servers import ServerThread

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


VALID = [
    [user("hi")],
    [{"role": "system", "content": "be brief"}, user([{"type": "text", "text": "a"}, IMAGE])],
    [{"role": "developer", "content": [{"type": "text", "text": "x"}]}, user("hi")],
    [user("hi"), {"role": "assistant", "content": None, "tool_calls": [CALL]},
     {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
    [user("hi"), {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
    [user("hi"), {"role": "assistant", "content": "ok", "name": "bot", "x-extra": 1}],
    [{"role": "function", "name": "f", "content": None}],
    [user([{"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}}])],
]

BAD: list[tuple[Any, str, str, str]] = [
    # messages, param, code, message
    ([user("x"), {"role": "assistant", "content": "x", "tool_calls": 5}],
     "messages[1].tool_calls", "invalid_type",
     "Invalid type for 'messages[1].tool_calls': expected an array, but got an integer instead."),
    ([{"content": "x"}], "messages[0].role", "missing_required_parameter",
     "Missing required parameter: 'messages[0].role'."),
    ([{"role": "boss", "content": "x"}], "messages[0].role", "invalid_value",
     "Invalid value: 'boss'. Supported values are: 'system', 'developer', 'user', 'assistant', "
     "'tool', 'function'."),
    ([{"role": 3, "content": "x"}], "messages[0].role", "invalid_value",
     "Invalid value: an integer. Supported values are: 'system', 'developer', 'user', "
     "'assistant', 'tool', 'function'."),
    (["hello"], "messages[0]", "invalid_type",
     "Invalid type for 'messages[0]': expected an object, but got a string instead."),
    ([user(None)], "messages[0].content", "missing_required_parameter",
     "Missing required parameter: 'messages[0].content'."),
    ([user(7)], "messages[0].content", "invalid_type",
     "Invalid type for 'messages[0].content': expected a string or an array of content parts, "
     "but got an integer instead."),
    ([user({"text": "x"})], "messages[0].content", "invalid_type",
     "Invalid type for 'messages[0].content': expected a string or an array of content parts, "
     "but got an object instead."),
    ([user([])], "messages[0].content", "empty_array",
     "Invalid 'messages[0].content': expected a non-empty array of content parts."),
    ([user(["x"])], "messages[0].content[0]", "invalid_type",
     "Invalid type for 'messages[0].content[0]': expected an object, but got a string instead."),
    ([user([{"text": "x"}])], "messages[0].content[0].type", "missing_required_parameter",
     "Missing required parameter: 'messages[0].content[0].type'."),
    ([user([{"type": "video", "video": {}}])], "messages[0].content[0].type", "invalid_value",
     "Invalid value: 'video'. Supported values are: 'text', 'image_url', 'input_audio', 'file'."),
    ([user([{"type": "text", "text": 5}])], "messages[0].content[0].text", "invalid_type",
     "Invalid type for 'messages[0].content[0].text': expected a string, but got an integer "
     "instead."),
    ([user([{"type": "image_url", "image_url": "http://x"}])],
     "messages[0].content[0].image_url", "invalid_type",
     "Invalid type for 'messages[0].content[0].image_url': expected an object, but got a string "
     "instead."),
    ([user([{"type": "image_url", "image_url": {}}])], "messages[0].content[0].image_url.url",
     "missing_required_parameter",
     "Missing required parameter: 'messages[0].content[0].image_url.url'."),
    ([{"role": "system", "content": [IMAGE]}], "messages[0].content[0].type", "invalid_value",
     "Invalid value: 'image_url'. Supported values are: 'text'."),
    ([{"role": "tool", "content": "42"}], "messages[0].tool_call_id", "missing_required_parameter",
     "Missing required parameter: 'messages[0].tool_call_id'."),
    ([{"role": "tool", "content": "42", "tool_call_id": 1}], "messages[0].tool_call_id",
     "invalid_type", "Invalid type for 'messages[0].tool_call_id': expected a string, but got an "
     "integer instead."),
    ([{"role": "assistant"}], "messages[0].content", "missing_required_parameter",
     "Missing required parameter: 'messages[0].content'."),
    ([{"role": "assistant", "content": None, "tool_calls": [5]}], "messages[0].tool_calls[0]",
     "invalid_type", "Invalid type for 'messages[0].tool_calls[0]': expected an object, but got "
     "an integer instead."),
    ([{"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}],
     "messages[0].tool_calls[0].type", "invalid_value",
     "Invalid value: 'code'. Supported values are: 'function'."),
    ([{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}],
     "messages[0].tool_calls[0].function.arguments", "invalid_type",
     "Invalid type for 'messages[0].tool_calls[0].function.arguments': expected a string, but "
     "got an object instead."),
    ([{"role": "assistant", "tool_calls": [{"type": "function", "function": CALL["function"]}]}],
     "messages[0].tool_calls[0].id", "missing_required_parameter",
     "Missing required parameter: 'messages[0].tool_calls[0].id'."),
    ([{"role": "assistant", "content": "x", "function_call": []}],
     "messages[0].function_call", "invalid_type",
     "Invalid type for 'messages[0].function_call': expected an object, but got an array "
     "instead."),
    ([{"role": "user", "content": "x", "name": ["n"]}], "messages[0].name", "invalid_type",
     "Invalid type for 'messages[0].name': expected a string, but got an array instead."),
    ([{"role": "function", "content": "x"}], "messages[0].name", "missing_required_parameter",
     "Missing required parameter: 'messages[0].name'."),
    ([], "messages", "invalid_type", "Invalid 'messages': expected a non-empty array of messages."),
]


@pytest.mark.parametrize("messages", VALID)
def test_valid_messages_pass(messages: list[Any]) -> None:
    validate_messages(messages)


@pytest.mark.parametrize(("messages", "param", "code", "message"), BAD)
def test_malformed_messages_name_the_field(messages: Any, param: str, code: str,
                                           message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_messages(messages)
    assert caught.value.to_dict() == {"error": {"message": message, "type": "invalid_request_error",
                                                "param": param, "code": code}}


@pytest.mark.parametrize(("messages", "param", "code", "message"), BAD[:6])
def test_malformed_messages_are_400_through_the_proxy(proxy: ServerThread, messages: Any,
                                                     param: str, code: str, message: str) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": messages},
                   headers={"authorization": "Bearer sk-demo-sales"})
    assert r.status_code == 400
    assert r.json() == {"error": {"message": message, "type": "invalid_request_error",
                                  "param": param, "code": code}}
