"""What a chat request means to the cache (proxy/cache/cache_key.py): scope, matched text,
output limit, bypass reasons and the client's cache controls."""

from __future__ import annotations

import random
from typing import Any

import pytest

from proxy.cache.cache_key import (
    MEMO_TEXT_CHARS,
    Controls,
    bypass_reason,
    controls_of,
    cut_hash,
    digest,
    key_of,
    normalise,
    output_limit,
    split_messages,
    strip_cache_control,
    text_of,
)
from proxy.cache.config import CacheConfig, Override
from proxy.errors import InvalidRequest
from proxy.memo import BoundedMemo


def body(text: str = "What is 2+2?", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": text}], **extra}


# -- digest and normalise ------------------------------------------------------------------

def test_digest_has_the_requested_size_and_separates_parts() -> None:
    assert len(digest("a", size=24)) == 24
    assert len(digest("a", size=32)) == 32
    # parts are delimited, so moving a boundary changes the hash
    assert digest("ab", "c") != digest("a", "bc")
    assert digest("x", b"y") == digest(b"x", "y")


@pytest.mark.parametrize(("a", "b"), [
    ("What is 2+2?", "what is 2+2"),
    ("  hello\n\tworld  ", "hello world"),
    ("Ｈｅｌｌｏ", "hello"),  # NFKC folds full-width letters
    ("STRASSE", "strasse"),
    ("Straße", "strasse"),  # casefold, not lower
    ("你好。", "你好"),
    ("ok?!.", "ok"),
])
def test_normalise_treats_trivial_differences_as_equal(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


def test_normalise_keeps_differences_that_change_meaning() -> None:
    assert normalise("2+2") != normalise("2+3")
    assert normalise("?what") != normalise("what")  # only trailing punctuation goes
    assert normalise("") == ""
    assert normalise(" ?! ") == ""


# -- message content -------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    ("plain", "plain"),
    ("", ""),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "a\nb"),
    ([{"type": "text", "text": None}], ""),
    ([], ""),
    ([{"type": "image_url", "image_url": {"url": "x"}}], None),
    ([{"type": "text", "text": "a"}, {"type": "input_audio"}], None),
    (["not a dict"], None),
    (None, None),
    (42, None),
    ({"type": "text", "text": "a"}, None),
])
def test_text_of(content: Any, expected: str | None) -> None:
    assert text_of(content) == expected


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, None),
    ({"max_tokens": 100}, 100),
    ({"max_completion_tokens": 50, "max_tokens": 100}, 50),
    ({"max_completion_tokens": 0, "max_tokens": 100}, 100),
    ({"max_tokens": -1}, None),
    ({"max_tokens": True}, None),
    ({"max_tokens": 10.0}, None),
    ({"max_tokens": "10"}, None),
])
def test_output_limit(fields: dict[str, Any], expected: int | None) -> None:
    assert output_limit(fields) == expected


def test_cut_hash_depends_on_the_limit_and_differs_from_the_text_hash() -> None:
    assert cut_hash("h", 100) == cut_hash("h", 100)
    assert cut_hash("h", 100) != cut_hash("h", 200)
    assert cut_hash("h", None) == cut_hash("h", 0)
    assert cut_hash("h", 100) != "h"
    assert len(cut_hash("h", 1)) == 32


# -- bypass ------------------------------------------------------------------------------------

DEFAULTS = CacheConfig().effective(None, "m", None)


@pytest.mark.parametrize(("fields", "reason"), [
    ({}, None),
    ({"temperature": DEFAULTS.max_temperature}, None),
    ({"temperature": DEFAULTS.max_temperature + 0.1}, "temperature"),
    ({"temperature": "hot"}, None),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"tools": []}, None),
    ({"n": 2}, "n"),
    ({"n": 1}, None),
])
def test_bypass_reason_with_default_settings(fields: dict[str, Any], reason: str | None) -> None:
    assert bypass_reason(fields, DEFAULTS) == reason


def test_bypass_reason_follows_the_effective_settings() -> None:
    allowing = DEFAULTS.apply(Override(cache_tools=True, cache_multiple_choices=True,
                                       max_temperature=2.0))
    assert bypass_reason({"tools": [{}], "n": 3, "temperature": 1.5}, allowing) is None


# -- split and key ---------------------------------------------------------------------------

@pytest.mark.parametrize("messages", [
    [],
    [{"role": "assistant", "content": "hi"}],
    [{"role": "user", "content": "   "}],
    [{"role": "user", "content": [{"type": "image_url"}]}],
    ["user"],
    [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}],
])
def test_split_messages_rejects_what_is_not_a_plain_question(messages: list[Any]) -> None:
    assert split_messages(messages) is None


def test_split_messages_separates_system_history_and_question() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                {"role": "developer", "content": "d"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "u2"}]
    split = split_messages(messages)
    assert split is not None
    system, history, text = split
    assert [m["content"] for m in system] == ["s", "d"]
    assert [m["content"] for m in history] == ["u1", "a1"]
    assert text == "u2"


def test_key_of_returns_none_for_a_request_that_is_not_a_question() -> None:
    assert key_of({"messages": [{"role": "assistant", "content": "x"}]}, "sales", "m") is None
    assert key_of({}, "sales", "m") is None


def test_key_of_describes_the_question() -> None:
    key = key_of(body("What is 2+2?"), "sales", "gpt")
    assert key is not None
    assert (key.owner, key.model, key.text) == ("sales", "gpt", "What is 2+2?")
    same = key_of(body("  what is 2+2 "), "sales", "gpt")
    assert same is not None
    assert (same.scope, same.text_hash) == (key.scope, key.text_hash)
    assert same.text == "  what is 2+2 "  # the text is kept as sent


@pytest.mark.parametrize("extra", [
    {"user": "u-1"}, {"metadata": {"a": "b"}}, {"max_tokens": 5}, {"max_completion_tokens": 9},
    {"stream_options": {"include_usage": True}}, {"service_tier": "flex"}, {"store": True},
    {"stream": False},
])
def test_neutral_parameters_do_not_change_the_scope(extra: dict[str, Any]) -> None:
    base, other = key_of(body(), "sales", "m"), key_of(body(**extra), "sales", "m")
    assert base is not None and other is not None
    assert other.scope == base.scope


@pytest.mark.parametrize("extra", [
    {"temperature": 0.5}, {"stream": True}, {"response_format": {"type": "json_object"}},
    {"seed": 1}, {"top_p": 0.1},
])
def test_answer_changing_parameters_change_the_scope(extra: dict[str, Any]) -> None:
    base, other = key_of(body(), "sales", "m"), key_of(body(**extra), "sales", "m")
    assert base is not None and other is not None
    assert other.scope != base.scope
    assert other.partition == base.partition


def test_owner_model_system_history_and_speaker_separate_scopes() -> None:
    base = key_of(body(), "sales", "m")
    assert base is not None
    variants = [
        key_of(body(), "support", "m"),
        key_of(body(), "sales", "other-model"),
        key_of({"messages": [{"role": "system", "content": "Be verbose."},
                             {"role": "user", "content": "What is 2+2?"}]}, "sales", "m"),
        key_of({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "earlier"},
                             {"role": "assistant", "content": "reply"},
                             {"role": "user", "content": "What is 2+2?"}]}, "sales", "m"),
        key_of({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "What is 2+2?", "name": "bob"}]},
               "sales", "m"),
    ]
    scopes = {v.scope for v in variants if v is not None}
    assert len(scopes) == len(variants) and base.scope not in scopes
    assert variants[0] is not None and variants[0].partition != base.partition


def test_key_of_is_independent_of_parameter_order() -> None:
    a = key_of({"temperature": 0, "seed": 3, **body()}, "sales", "m")
    b = key_of({**body(), "seed": 3, "temperature": 0}, "sales", "m")
    assert a is not None and b is not None and a.scope == b.scope


# -- controls ----------------------------------------------------------------------------------

LOOKUP_AND_STORE = Controls(True, True)
STORE_ONLY = Controls(False, True)
NEITHER = Controls(False, False)


@pytest.mark.parametrize(("headers", "controls"), [
    ({}, LOOKUP_AND_STORE),
    ({"cache-control": "no-store"}, NEITHER),
    ({"cache-control": "max-age=0, No-Store"}, NEITHER),
    ({"cache-control": "no-cache"}, STORE_ONLY),
    ({"x-meterline-cache": "off"}, NEITHER),
    ({"x-meterline-cache": " REFRESH "}, STORE_ONLY),
    ({"x-meterline-cache": "whatever"}, LOOKUP_AND_STORE),
    ({"cache-control": "no-cache", "x-meterline-cache": "off"}, NEITHER),
])
def test_controls_from_headers(headers: dict[str, str], controls: Controls) -> None:
    payload = body()
    assert controls_of(headers, payload) == (controls, False)
    assert payload == body()


@pytest.mark.parametrize(("control", "controls"), [
    ({"mode": "default"}, LOOKUP_AND_STORE),
    ({}, LOOKUP_AND_STORE),
    ({"mode": "off"}, NEITHER),
    ({"mode": "no-store"}, NEITHER),
    ({"mode": "refresh"}, STORE_ONLY),
    ({"mode": "no-cache"}, STORE_ONLY),
])
def test_controls_from_the_body_are_removed_from_it(control: dict[str, Any],
                                                    controls: Controls) -> None:
    payload = body(cache=control)
    assert controls_of({}, payload) == (controls, True)
    assert "cache" not in payload


@pytest.mark.parametrize(("value", "controls"), [
    ('{"mode": "off"}', NEITHER),
    ("refresh", STORE_ONLY),
    ({"mode": "refresh"}, STORE_ONLY),
])
def test_controls_in_metadata(value: Any, controls: Controls) -> None:
    payload = body(metadata={"cache": value, "trace": "t1"})
    assert controls_of({}, payload) == (controls, True)
    assert payload["metadata"] == {"trace": "t1"}


def test_metadata_left_empty_is_removed() -> None:
    payload = body(metadata={"cache": "off"})
    controls_of({}, payload)
    assert "metadata" not in payload


@pytest.mark.parametrize(("control", "shown"), [
    ({"mode": "sometimes"}, "'sometimes'"),
    ({"mode": 1}, "1"),
    ("bogus", "'bogus'"),
    ('{"mode": "OFF"}', "'OFF'"),
    (["off"], "None"),
    (7, "None"),
])
def test_invalid_cache_mode_is_a_400_naming_the_field(control: Any, shown: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        controls_of({}, body(cache=control))
    error = info.value.to_dict()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "cache.mode"
    assert error["code"] == "invalid_value"
    assert error["message"] == (f"Invalid 'cache.mode': {shown}; expected one of "
                                "default, off, refresh, no-cache, no-store.")


def test_strip_cache_control() -> None:
    payload = body(cache={"mode": "bogus"}, metadata={"cache": "x", "k": "v"})
    assert strip_cache_control(payload) is True
    assert "cache" not in payload and payload["metadata"] == {"k": "v"}
    assert strip_cache_control(payload) is False
    untouched = body(metadata="not a dict")
    assert strip_cache_control(untouched) is False
    assert untouched["metadata"] == "not a dict"


@pytest.mark.parametrize("text", ["  What is 2+2? ", "Ünïcode ✓ " * 300])
def test_remembered_text_hashes_give_the_same_key(text: str) -> None:
    """A hit's key reuses the question's hash (normalising and hashing were half of key_of);
    the key is the one computed afresh, and only questions up to MEMO_TEXT_CHARS are kept."""
    memo: BoundedMemo[str, str] = BoundedMemo()
    fresh = key_of(body(text), "sales", "m")
    assert key_of(body(text), "sales", "m", memo) == fresh
    assert key_of(body(text), "sales", "m", memo) == fresh
    assert len(memo) == (1 if len(text) <= MEMO_TEXT_CHARS else 0)
    other = key_of(body("What is 3+3?"), "sales", "m", memo)
    assert other is not None and fresh is not None and other.text_hash != fresh.text_hash


def test_keys_remembered_by_body_equal_key_of_for_every_body_owner_and_model() -> None:
    """SemanticCache remembers a body's key by its JSON: each answer, asked in any order and
    again, must be key_of's for that very body, owner and model, so two requests that differ in
    anything key_of reads never share a remembered key (a false hit)."""
    from proxy.cache.config import CacheConfig
    from proxy.cache.memory import MemoryCacheBackend
    from proxy.cache.semantic_cache import SemanticCache
    from proxy.memo import MEMO_BODY_BYTES

    cache = SemanticCache(CacheConfig.model_validate({}), MemoryCacheBackend(), None)
    base: dict[str, Any] = {"model": "m", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is DNS?"}]}
    bodies = [
        base,
        {**base, "temperature": 0.2},
        {**base, "messages": [base["messages"][0], {"role": "user", "content": "What is DNS"}]},
        {**base, "messages": [{"role": "system", "content": "Be long."}, base["messages"][1]]},
        {**base, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
                                                                  "content": "hello"},
                              base["messages"][1]]},
        {**base, "messages": [base["messages"][0],
                              {"role": "user", "content": "What is DNS?", "name": "bo"}]},
        {**base, "stream": True},
        {**base, "messages": [base["messages"][0],
                              {"role": "user", "content": "x" * MEMO_BODY_BYTES}]},  # too big
        {**base, "messages": [{"role": "assistant", "content": "not a question"}]},
    ]
    rng = random.Random(3)
    asked = [(b, o, m) for b in bodies for o in ("eng", "shared:all") for m in ("m", "m2")]
    keys = set()
    for body, owner, model in rng.sample(asked * 3, len(asked) * 3):
        got = cache._key(body, owner, model)
        assert got == key_of(body, owner, model)
        keys.add(got)
    assert len(keys) == 4 * 8 + 1  # each answerable body (x owner x model) its own key; None
