"""What a chat request means to the cache: its scope, the text to match, and the client's controls.

Two requests may share an answer only when everything but the last user turn is identical:
owner (department, or an opt-in shared scope), model, system prompt, the parameters that change
the answer, and the earlier turns of the conversation. Those go into one scope hash; the last
user turn is the text that is matched (exactly after normalising, then semantically).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.cache.config import Effective
from proxy.errors import InvalidRequest
from proxy.memo import BoundedMemo

# Body fields that do not change the answer (or are matched separately: messages, model).
NEUTRAL_PARAMS = frozenset({
    "messages", "model", "stream_options", "user", "metadata", "store", "cache",
    "max_tokens", "max_completion_tokens", "service_tier", "prompt_cache_key",
    "safety_identifier",
})
SYSTEM_ROLES = ("system", "developer")
CONTROL_VALUES = ("default", "off", "refresh", "no-cache", "no-store")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Controls:
    """What this request lets the cache do."""

    lookup: bool
    store: bool


@dataclass(frozen=True, slots=True)
class Key:
    """Where a request's answer lives in the cache."""

    owner: str  # department or "shared:<name>"
    model: str
    scope: str  # hash of owner, model, system prompt, params, history
    partition: str  # hash of owner + model: max_size and threshold tightening apply here
    text: str  # the last user turn, as sent
    text_hash: str  # of the normalised last user turn


def digest(*parts: str | bytes, size: int = 24) -> str:
    h = hashlib.blake2b(digest_size=size // 2)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x1f")
    return h.hexdigest()


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", text).strip().rstrip("?.!。 ").strip()


def text_of(content: Any) -> str | None:
    """Plain text of a message's content; None when it holds anything but text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def output_limit(body: Mapping[str, Any]) -> int | None:
    """The request's cap on answer tokens, or None. It is not part of the scope: a complete
    answer is served to any request whose limit it fits (see `SemanticCache.fits`)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def cut_hash(text_hash: str, limit: int | None) -> str:
    """Where an answer cut short by `limit` (finish_reason "length") is stored: only a request
    with the same text and the same limit finds it, and it never displaces the complete one."""
    return digest(text_hash, f"cut:{limit or 0}", size=32)


def bypass_reason(body: Mapping[str, Any], settings: Effective) -> str | None:
    """Why this request must not use the cache at all, or None."""
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > settings.max_temperature:
        return "temperature"
    if body.get("tools") and not settings.cache_tools:
        return "tools"
    n = body.get("n")
    if isinstance(n, int) and n > 1 and not settings.cache_multiple_choices:
        return "n"
    return None


def split_messages(messages: list[Any]) -> tuple[list[Any], list[Any], str] | None:
    """(system messages, earlier turns, last user text), or None if the request is not a
    plain text question (last message not from the user, or non-text parts)."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    text = text_of(messages[-1].get("content"))
    if text is None or not text.strip():
        return None
    system = [m for m in messages[:-1] if m.get("role") in SYSTEM_ROLES]
    history = [m for m in messages[:-1] if m.get("role") not in SYSTEM_ROLES]
    return system, history, text


def hash_text(text: str) -> str:
    """The exact-match hash of a question: its normalised text's digest."""
    return digest(normalise(text), size=32)


# Questions up to this long have their hash remembered (SemanticCache.text_hashes): normalising
# and hashing took ~15 of key_of's ~28 us, and the same questions come back on every hit.
MEMO_TEXT_CHARS = 2048


def key_of(body: Mapping[str, Any], owner: str, model: str,
           text_hashes: BoundedMemo[str, str] | None = None) -> Key | None:
    split = split_messages(body.get("messages") or [])
    if split is None:
        return None
    system, history, text = split
    params = {k: v for k, v in body.items() if k not in NEUTRAL_PARAMS}
    params["stream"] = body.get("stream") is True
    # everything on the last user message except its text (e.g. `name`: who is asking)
    params["last_user"] = {k: v for k, v in body["messages"][-1].items() if k != "content"}
    opts = orjson.OPT_SORT_KEYS
    scope = digest(owner, model, orjson.dumps(system, option=opts),
                   orjson.dumps(params, option=opts), orjson.dumps(history, option=opts))
    text_hash = text_hashes.get(text) if text_hashes is not None else None
    if text_hash is None:
        text_hash = hash_text(text)
        if text_hashes is not None and len(text) <= MEMO_TEXT_CHARS:
            text_hashes.put(text, text_hash)
    return Key(owner, model, scope, digest(owner, model, size=16), text, text_hash)


def _pop_control(body: dict[str, Any]) -> tuple[Any, bool]:
    """Pop the `cache` object (top level or in metadata) so it never goes upstream."""
    changed = "cache" in body
    found: Any = body.pop("cache", None)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "cache" in metadata:
        found, changed = metadata.pop("cache"), True
        if not metadata:
            body.pop("metadata")
    return found, changed


def strip_cache_control(body: dict[str, Any]) -> bool:
    """Remove the per-request cache object; True if the body changed."""
    return _pop_control(body)[1]


def _control_mode(found: Any) -> str:
    if found is None:
        return "default"
    if isinstance(found, str):  # metadata values are strings in the OpenAI API
        try:
            found = orjson.loads(found)
        except orjson.JSONDecodeError:
            found = {"mode": found}
    mode = found.get("mode", "default") if isinstance(found, dict) else None
    if mode not in CONTROL_VALUES:
        raise InvalidRequest(f"Invalid 'cache.mode': {mode!r}; expected one of "
                             f"{', '.join(CONTROL_VALUES)}.", param="cache.mode",
                             code="invalid_value")
    return str(mode)


def controls_of(headers: Mapping[str, str], body: dict[str, Any]) -> tuple[Controls, bool]:
    """Client controls from headers and body; the flag says the body was changed."""
    found, changed = _pop_control(body)
    mode = _control_mode(found)
    cache_control = {d.strip().lower() for d in headers.get("cache-control", "").split(",")}
    header = headers.get("x-meterline-cache", "").strip().lower()
    if "no-store" in cache_control or header == "off" or mode in ("off", "no-store"):
        return Controls(False, False), changed
    if "no-cache" in cache_control or header == "refresh" or mode in ("refresh", "no-cache"):
        return Controls(False, True), changed
    return Controls(True, True), changed
