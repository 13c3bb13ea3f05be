from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.errors import ConfigError
from proxy.routing.rules import (
    DEFAULT_RULE,
    RouteInput,
    RoutingRules,
    check_models,
    estimate_tokens,
    last_user_text,
    load,
    parse_config,
    resolve_user,
    select_route,
)

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-3.5-turbo", "o3-mini",
         "mixtral-8x7b", "llama-3.1-8b"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}

RULES = parse_config(
    {
        "rules": [
            {"name": "vision", "match": {"images": True}, "target": "gpt-4o"},
            {"name": "big", "match": {"min_prompt_tokens": 5000}, "target": "gpt-4.1",
             "fallbacks": ["gpt-4o"]},
            {"name": "code", "match": {"regex": r"(?i)\btraceback\b"}, "target": "gpt-4.1"},
            {"name": "sales-short",
             "match": {"department": ["sales", "marketing"], "max_prompt_tokens": 1000,
                       "tools": False},
             "target": "gpt-4o-mini", "fallbacks": ["gpt-4.1-mini", "gpt-3.5-turbo"]},
            {"name": "summary", "match": {"task": ["summary"]}, "target": "mixtral-8x7b"},
            {"name": "translate", "match": {"keywords": ["translate", "c++"]},
             "target": "gpt-4.1-mini"},
            {"name": "legacy", "match": {"model": ["gpt-3.5*"]}, "target": "gpt-4o-mini"},
        ]
    },
    RoutingRules,
    "test",
)


def inp(text: str = "hello", **kw: Any) -> RouteInput:
    messages = kw.pop("messages", [{"role": "user", "content": text}])
    defaults: dict[str, Any] = {
        "model": "gpt-4o", "department": "eng", "tools": False, "task": None, "user": "u1",
        "prompt_tokens": 10,
    }
    return RouteInput(messages=messages, **{**defaults, **kw})


@pytest.mark.parametrize(
    ("request_input", "rule", "model"),
    [
        (inp(), DEFAULT_RULE, "gpt-4o"),
        (inp(model="o3-mini"), DEFAULT_RULE, "o3-mini"),
        (inp(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}]),
         "vision", "gpt-4o"),
        (inp(prompt_tokens=5000), "big", "gpt-4.1"),
        (inp(prompt_tokens=4999), DEFAULT_RULE, "gpt-4o"),
        (inp("Here is a Traceback (most recent call last)"), "code", "gpt-4.1"),
        (inp("tracebacks are fun"), DEFAULT_RULE, "gpt-4o"),
        (inp(department="sales"), "sales-short", "gpt-4o-mini"),
        (inp(department="marketing", prompt_tokens=1000), "sales-short", "gpt-4o-mini"),
        (inp(department="marketing", prompt_tokens=1001), DEFAULT_RULE, "gpt-4o"),
        (inp(department="sales", tools=True), DEFAULT_RULE, "gpt-4o"),
        (inp(department="support"), DEFAULT_RULE, "gpt-4o"),
        (inp(department="sales", task="summary"), "sales-short", "gpt-4o-mini"),  # order wins
        (inp(task="summary"), "summary", "mixtral-8x7b"),
        (inp(task="Summary"), DEFAULT_RULE, "gpt-4o"),
        (inp("Please TRANSLATE this"), "translate", "gpt-4.1-mini"),
        (inp("a translated text"), DEFAULT_RULE, "gpt-4o"),
        (inp("is C++ faster?"), "translate", "gpt-4.1-mini"),
        (inp(model="gpt-3.5-turbo-0125"), "legacy", "gpt-4o-mini"),
        (inp(model="gpt-4o-mini"), DEFAULT_RULE, "gpt-4o-mini"),
    ],
)
def test_rule_table(request_input: RouteInput, rule: str, model: str) -> None:
    decision = select_route(RULES, request_input)
    assert (decision.rule, decision.model) == (rule, model)


def test_regex_and_keywords_look_only_at_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "translate this traceback"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "translate"},
    ]
    assert last_user_text(messages) == "thanks"
    assert select_route(RULES, inp(messages=messages)).rule == DEFAULT_RULE


def test_decision_carries_fallbacks_and_explanation() -> None:
    decision = select_route(RULES, inp(department="sales", tools=True))
    assert decision.targets == ("gpt-4o",)
    by_rule = {c.rule: c for c in decision.explanation}
    assert [c.rule for c in decision.explanation] == [r.name for r in RULES.rules] + ["default"]
    assert by_rule["sales-short"].matched is False
    assert by_rule["sales-short"].reasons == ("tools=True (rule wants False)",)
    assert by_rule["summary"].reasons == ("task None not in ['summary']",)

    hit = select_route(RULES, inp(department="sales"))
    assert hit.targets == ("gpt-4o-mini", "gpt-4.1-mini", "gpt-3.5-turbo")
    assert [c.rule for c in hit.explanation] == ["vision", "big", "code", "sales-short"]
    assert hit.explanation[-1].reasons == (
        "department 'sales' in ['sales', 'marketing']",
        "prompt_tokens 10 <= 1000",
        "tools=False (rule wants False)",
    )
    assert hit.to_dict()["explanation"][-1]["matched"] is True


def test_keywords_respect_word_edges_and_case() -> None:
    rules = parse_config({"rules": [{"name": "code", "target": "gpt-4.1",
                                     "match": {"keywords": ["```", "Stack Trace", "STRASSE"]}}]},
                         RoutingRules, "t")
    assert select_route(rules, inp("see ```python\nprint(1)```")).rule == "code"
    assert select_route(rules, inp("my STACK TRACE:")).rule == "code"
    assert select_route(rules, inp("die Straße")).rule == "code"  # casefolded: ß == ss
    assert select_route(rules, inp("stack traces")).rule == DEFAULT_RULE
    miss = select_route(rules, inp("nothing here")).explanation[0]
    assert miss.reasons == ("none of keywords ['```', 'Stack Trace', 'STRASSE'] "
                            "in last user message",)


def test_text_conditions_are_skipped_when_cheap_ones_fail() -> None:
    rules = parse_config({"rules": [{"name": "r", "target": "gpt-4.1",
                                     "match": {"department": ["sales"], "regex": "x"}}]},
                         RoutingRules, "t")
    (check, _) = select_route(rules, inp("y", department="eng")).explanation
    assert check.reasons == ("department 'eng' not in ['sales']",)
    (check, _) = select_route(rules, inp("y", department="sales")).explanation
    assert check.reasons == ("regex 'x' does not match last user message",)


def test_estimate_tokens_counts_text_messages_and_images() -> None:
    assert estimate_tokens([]) == 3
    one = estimate_tokens([{"role": "user", "content": "a" * 400}])
    assert one == 100 + 4 + 3
    parts = [{"role": "user", "content": [{"type": "text", "text": "a" * 400}, IMAGE]}]
    assert estimate_tokens(parts) == one + 85
    calls = [{"role": "assistant", "content": None,
              "tool_calls": [{"function": {"name": "f" * 8, "arguments": "x" * 32}}]}]
    assert estimate_tokens(calls) == 10 + 4 + 3


def test_route_input_from_request_resolves_user_task_and_tools() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function"}]}
    headers = {"x-meterline-task": "summary", "x-meterline-user": "hdr"}
    built = RouteInput.from_request(body, "sales", headers, "key-1")
    assert (built.task, built.user, built.tools, built.prompt_tokens) == ("summary", "hdr", True, 7)
    assert resolve_user("body", "hdr", "key") == "body"
    assert resolve_user(None, None, "key") == "key"


def test_shipped_routing_yaml_loads_and_uses_known_models() -> None:
    rules = load(ROOT / "rules" / "routing.yaml")
    check_models(rules, KNOWN)
    decision = select_route(rules, inp("short question", department="sales"))
    assert decision.model == "gpt-4o-mini"
    assert select_route(rules, inp("Please refactor this")).rule == "code-review"
    assert select_route(rules, inp("Übersetze bitte: hallo")).rule == "translate"
    assert select_route(rules, inp("can you translate")).rule == DEFAULT_RULE  # anchored


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"rules": [{"name": "a", "target": "x", "colour": "red"}]},
         "field 'rules[0].colour' has value 'red': Extra inputs are not permitted"),
        ({"rules": [{"name": "a", "target": "x", "match": {"regex": "(unclosed"}}]},
         "field 'rules[0].match.regex' has value '(unclosed': Value error, not a valid regular"),
        ({"rules": [{"name": "a", "target": "x", "match": {"dept": ["sales"]}}]},
         "field 'rules[0].match.dept' has value ['sales']: Extra inputs"),
        ({"rules": [{"name": "a", "target": "x"}, {"name": "a", "target": "y"}]},
         "field 'rules' has value"),
        ({"rules": [{"name": "a", "target": "x", "fallbacks": ["x"]}]},
         "target and fallbacks repeat a model: ['x', 'x']"),
        ({"rules": [{"name": "bad name", "target": "x"}]},
         "field 'rules[0].name' has value 'bad name'"),
        ({"rules": [{"name": "a", "target": "x",
                     "match": {"min_prompt_tokens": 10, "max_prompt_tokens": 5}}]},
         "min_prompt_tokens 10 is above max_prompt_tokens 5"),
        ({"rules": [{"name": "a", "target": "x", "match": {"tools": "maybe"}}]},
         "field 'rules[0].match.tools' has value 'maybe'"),
        # the cache judge's calls are recorded under this route: a rule of that name would mix
        # its spend with the judge's in every report
        ({"rules": [{"name": "cache-judge", "target": "x"}]},
         "rule names must be unique and not 'default' or 'cache-judge': ['cache-judge']"),
    ],
)
def test_invalid_config_names_field_and_value(data: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, RoutingRules, "rules/routing.yaml")
    assert str(err.value).startswith("rules/routing.yaml: ")
    assert expected in str(err.value)


def test_load_names_the_file_for_bad_yaml_and_unknown_models(tmp_path: Path) -> None:
    broken = tmp_path / "routing.yaml"
    broken.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML"):
        load(broken)
    good = tmp_path / "ok.yaml"
    good.write_text(yaml.safe_dump({"rules": [{"name": "a", "target": "gpt-4o",
                                               "fallbacks": ["gpt-5-turbo"]}]}))
    with pytest.raises(ConfigError, match=r"'rules\[0\].fallbacks' has value 'gpt-5-turbo'"):
        check_models(load(good), KNOWN)


def test_the_judges_route_is_reserved() -> None:
    from proxy.cache.judge import ROUTE
    from proxy.routing.rules import RESERVED_RULE_NAMES

    assert ROUTE in RESERVED_RULE_NAMES


def test_rules_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        RULES.rules[0].target = "gpt-4o-mini"  # type: ignore[misc]


def test_fast_path_decides_like_the_explained_path() -> None:
    """The request path skips explanations; it must pick the same rule for every input."""
    cases = [
        inp(department="sales"), inp(department="sales", tools=True), inp(department="legal"),
        inp("see ```python\nprint(1)```"), inp("my STACK TRACE:"), inp("die Straße"),
        inp(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:x"}}]}]),
    ]
    for rules in (RULES, load(ROOT / "rules" / "routing.yaml")):
        for case in cases:
            slow = select_route(rules, case)
            fast = select_route(rules, case, explain=False)
            assert (fast.rule, fast.model, fast.fallbacks) == (slow.rule, slow.model,
                                                               slow.fallbacks)
            assert fast.explanation == ()


def test_remembered_routes_equal_routing_each_request_afresh() -> None:
    """route_request remembers a body's prompt facts and decision by its JSON, department and
    task: asked in any order and again, every answer must be what RouteInput.from_request and
    select_route give that very request (a shared decision for a body that differs in anything
    a rule reads would route it wrongly)."""
    import random

    from proxy.memo import MEMO_BODY_BYTES
    from proxy.routing.rules import route_request

    def body(text: str, **more: Any) -> dict[str, Any]:
        return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **more}

    bodies = [body("hello"), body("hello", tools=[{"type": "function"}]), body("a traceback"),
              body("translate this"), body("x" * 30_000), body("hello", model="gpt-3.5-turbo"),
              body("look", messages=[{"role": "user", "content": [IMAGE]}]),
              body("hello", user="bo"), body("y" * MEMO_BODY_BYTES)]
    asks = [(b, d, h) for b in bodies for d in ("sales", "legal")
            for h in ({}, {"x-meterline-task": "summary"}, {"x-meterline-user": "ann"})]
    rng = random.Random(5)
    for rules in (RULES, load(ROOT / "rules" / "routing.yaml")):
        for b, department, headers in rng.sample(asks * 2, len(asks) * 2):
            got_inp, got = route_request(rules, b, department, headers, "key-1")
            want_inp = RouteInput.from_request(b, department, headers, "key-1")
            want = select_route(rules, want_inp, explain=False)
            assert (got.rule, got.model, got.fallbacks) == (want.rule, want.model,
                                                            want.fallbacks)
            assert got_inp == want_inp
