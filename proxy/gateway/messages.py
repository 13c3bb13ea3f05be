"""The shape of chat `messages`, checked as OpenAI checks it: a malformed message is the caller's
400 naming the field (`messages[2].tool_calls[0].function.name`), never a 500 further down the
path (routing, token estimates and cache keys all read messages).

Only shapes are checked, not meaning: unknown keys inside a message pass unchanged, so a provider
that accepts more (e.g. vLLM's extra fields) still gets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# content part types per role (OpenAI's chat API); text-only roles take text parts only
PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}
# the field a part of that type must carry, and its JSON type
PART_FIELDS: dict[str, tuple[str, type]] = {
    "text": ("text", str),
    "refusal": ("refusal", str),
    "image_url": ("image_url", dict),
    "input_audio": ("input_audio", dict),
    "file": ("file", dict),
}
JSON_TYPES: dict[type, str] = {str: "a string", dict: "an object", list: "an array",
                               int: "an integer", float: "a number", bool: "a boolean"}


def validate_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("Invalid 'messages': expected a non-empty array of messages.",
                             param="messages", code="invalid_type")
    for i, message in enumerate(messages):
        validate_message(message, f"messages[{i}]")


def validate_message(message: object, where: str) -> None:
    if not isinstance(message, dict):
        raise _wrong_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if not isinstance(role, str) or role not in ROLES:
        raise _bad_value(f"{where}.role", role, ROLES)
    content = message.get("content")
    if type(content) is str and role == "user" and len(message) == 2:
        return  # the common case, nothing else to check
    _check_content(message, role, where)
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise _wrong_type(f"{where}.name", "a string", name)
    if role == "function" and not isinstance(name, str):
        raise _missing(f"{where}.name")
    if role == "tool":
        _require_str(message, "tool_call_id", where)
    if role == "assistant":
        _check_assistant(message, where)


def _check_content(message: Mapping[str, Any], role: str, where: str) -> None:
    content = message.get("content")
    here = f"{where}.content"
    if content is None:
        optional = role == "function" or (role == "assistant" and (
            message.get("tool_calls") is not None or message.get("function_call") is not None
            or message.get("refusal") is not None or message.get("audio") is not None))
        if not optional:
            raise _missing(here)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _wrong_type(here, "a string or an array of content parts", content)
    if not content and role != "assistant":
        raise InvalidRequest(f"Invalid '{here}': expected a non-empty array of content parts.",
                             param=here, code="empty_array")
    allowed = PART_TYPES[role]
    for j, part in enumerate(content):
        _check_part(part, allowed, f"{here}[{j}]")


def _check_part(part: object, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(part, dict):
        raise _wrong_type(where, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise _missing(f"{where}.type")
    if not isinstance(kind, str) or kind not in allowed:
        raise _bad_value(f"{where}.type", kind, allowed)
    field, expected = PART_FIELDS[kind]
    value = part.get(field)
    if value is None:
        raise _missing(f"{where}.{field}")
    if not isinstance(value, expected):
        raise _wrong_type(f"{where}.{field}", JSON_TYPES[expected], value)
    if kind == "image_url" and isinstance(value, dict):
        _require_str(value, "url", f"{where}.image_url")
    elif kind == "input_audio" and isinstance(value, dict):
        _require_str(value, "data", f"{where}.input_audio")
        _require_str(value, "format", f"{where}.input_audio")


def _check_assistant(message: Mapping[str, Any], where: str) -> None:
    for name in ("refusal",):
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise _wrong_type(f"{where}.{name}", "a string", value)
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise _wrong_type(f"{where}.tool_calls", "an array", calls)
        for k, call in enumerate(calls):
            _check_tool_call(call, f"{where}.tool_calls[{k}]")
    function_call = message.get("function_call")
    if function_call is not None:
        _check_function(function_call, f"{where}.function_call")


def _check_tool_call(call: object, where: str) -> None:
    if not isinstance(call, dict):
        raise _wrong_type(where, "an object", call)
    _require_str(call, "id", where)
    kind = call.get("type")
    if kind is None:
        raise _missing(f"{where}.type")
    if kind != "function":
        raise _bad_value(f"{where}.type", kind, ("function",))
    function = call.get("function")
    if function is None:
        raise _missing(f"{where}.function")
    _check_function(function, f"{where}.function")


def _check_function(function: object, where: str) -> None:
    if not isinstance(function, dict):
        raise _wrong_type(where, "an object", function)
    _require_str(function, "name", where)
    _require_str(function, "arguments", where)


def _require_str(holder: Mapping[str, Any], name: str, where: str) -> None:
    value = holder.get(name)
    if value is None:
        raise _missing(f"{where}.{name}")
    if not isinstance(value, str):
        raise _wrong_type(f"{where}.{name}", "a string", value)


def _json_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return JSON_TYPES.get(type(value), type(value).__name__)


def _wrong_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}, but got "
                          f"{_json_name(value)} instead.", param=param, code="invalid_type")


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                          code="missing_required_parameter")


def _bad_value(param: str, value: object, supported: tuple[str, ...]) -> InvalidRequest:
    shown = repr(value) if isinstance(value, str) else _json_name(value)
    if isinstance(value, str) and len(shown) > 80:
        shown = shown[:77] + "...'"
    names = ", ".join(f"'{s}'" for s in supported)
    return InvalidRequest(f"Invalid value: {shown}. Supported values are: {names}.", param=param,
                          code="invalid_value")
