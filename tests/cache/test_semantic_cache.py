"""The answer cache through the real proxy (openai SDK) on both backends: in-process and Redis.

Every test runs twice: `backend` is "memory" or "redis" (a real Redis Stack, own key prefix).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, fault, mock_requests

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"
Starter = Callable[..., ServerThread]


def cache_yaml(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO_RULES / "cache.yaml").read_text())
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


@pytest.fixture(name="start_cached",
                params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def start_cached_fixture(request: pytest.FixtureRequest, start_proxy: ProxyStarter) -> Starter:
    """Start a proxy with cache.yaml changes on the parametrized backend."""
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        overrides = {"redis_url": request.getfixturevalue("redis_url"),
                     "redis_prefix": request.getfixturevalue("redis_prefix")}

    def start(**changes: Any) -> ServerThread:
        return start_proxy(edits={"cache.yaml": cache_yaml(**changes)}, **overrides)

    return start


def client(proxy: ServerThread, key: str = "sk-demo-engineering") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def ask(proxy: ServerThread, text: str, *, key: str = "sk-demo-engineering",
        model: str = "gpt-4o", system: str | None = None,
        history: list[dict[str, str]] | None = None, name: str | None = None,
        headers: dict[str, str] | None = None, **params: Any) -> tuple[str, dict[str, str]]:
    messages = ([{"role": "system", "content": system}] if system else []) + (history or [])
    messages.append({"role": "user", "content": text, **({"name": name} if name else {})})
    raw = client(proxy, key).chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers, **params)
    completion = raw.parse()
    return completion.choices[0].message.content or "", dict(raw.headers)


def upstream_calls(mock: ServerThread, text: str) -> int:
    """How many of the mock's recent requests asked `text` (use a text unique to the test)."""
    return sum(1 for r in mock_requests(mock.url)
               if (r["body"].get("messages") or [{}])[-1].get("content") == text)


def test_exact_hit_serves_the_same_answer_for_free(start_cached: Starter,
                                                   mock_upstream: ServerThread) -> None:
    proxy = start_cached()
    question = f"What does the x-request-id header {uuid.uuid4().hex[:6]} do?"
    first, h1 = ask(proxy, question)
    second, h2 = ask(proxy, "  " + question.lower().rstrip("?") + "  ")
    assert h1["x-meterline-cache"] == "miss"
    assert h2["x-meterline-cache"] == "hit-exact"
    assert second == first
    assert upstream_calls(mock_upstream, question) == 1
    assert float(h2["x-meterline-cost-usd"]) == 0
    assert float(h2["x-meterline-cache-saved-usd"]) == pytest.approx(
        float(h1["x-meterline-cost-usd"]))


def test_semantic_hit_names_similarity_and_entry(start_cached: Starter) -> None:
    proxy = start_cached()
    # (the verifier refuses "How do I" -> "How can I" at p = 0.72 < 0.89: see docs/cache-quality.md)
    first, _ = ask(proxy, "What are the health benefits of green tea?")
    second, headers = ask(proxy, "What are the health benifits of green tea?")
    assert headers["x-meterline-cache"] == "hit-semantic"
    assert second == first
    assert 0.95 <= float(headers["x-meterline-cache-similarity"]) <= 1.0
    assert headers["x-meterline-cache-entry"]


@pytest.mark.parametrize("cached,asked", [
    ("She was born in Ohio and raised in Texas.", "She was born in Texas and raised in Ohio."),
    ("The film was directed by Nolan and produced by Thomas.",
     "The film was produced by Nolan and directed by Thomas."),
])
def test_verifier_refuses_word_swaps_the_guards_served(start_cached: Starter, cached: str,
                                                       asked: str) -> None:
    """Cosine > 0.99 and the same words: the guards saw no difference and served the answer."""
    proxy = start_cached()
    ask(proxy, cached)
    _, headers = ask(proxy, asked)
    assert headers["x-meterline-cache"] == "miss"


@pytest.mark.parametrize("cached,asked,threshold", [
    ("Is 2 GB of RAM enough for Windows 11?", "Is 20 GB of RAM enough for Windows 11?", 0.9),
    ("Did Brazil beat Germany in 2014?", "Did Germany beat Brazil in 2014?", 0.95),
])
def test_guards_refuse_similar_questions_that_differ(start_cached: Starter, cached: str,
                                                     asked: str, threshold: float) -> None:
    proxy = start_cached(threshold=threshold)
    first, _ = ask(proxy, cached)
    second, headers = ask(proxy, asked)
    assert headers["x-meterline-cache"] == "miss"
    assert second != first


@pytest.mark.parametrize("change", [
    {"key": "sk-demo-marketing"},
    {"model": "gpt-4.1"},
    {"system": "Answer like a pirate."},
    {"temperature": 0.2},
    {"max_tokens": 5},
    {"response_format": {"type": "json_object"}},
    {"history": [{"role": "user", "content": "We use Kubernetes."},
                 {"role": "assistant", "content": "Noted."}]},
    {"name": "alice"},
])
def test_scope_separates_departments_models_system_params_history(
        start_cached: Starter, change: dict[str, Any]) -> None:
    proxy = start_cached()
    question = "Which port does HTTPS use by default?"
    _, h1 = ask(proxy, question)
    _, h2 = ask(proxy, question, **change)
    _, h3 = ask(proxy, question)
    assert (h1["x-meterline-cache"], h2["x-meterline-cache"]) == ("miss", "miss")
    assert h3["x-meterline-cache"] == "hit-exact"


def test_shared_scope_answers_across_departments(start_cached: Starter) -> None:
    proxy = start_cached(shared_scopes={"gtm": {"departments": ["sales", "marketing"]}})
    first, _ = ask(proxy, "What is our discount policy?", key="sk-demo-sales",
                   model="gpt-4o-mini")
    second, headers = ask(proxy, "What is our discount policy?", key="sk-demo-marketing",
                          model="gpt-4o-mini")
    assert headers["x-meterline-cache"] == "hit-exact" and second == first


@pytest.mark.parametrize("params", [
    {"temperature": 1.5},
    {"n": 2},
    {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {}}}}]},
])
def test_risky_requests_bypass(start_cached: Starter, params: dict[str, Any]) -> None:
    proxy = start_cached()
    for _ in range(2):
        raw = client(proxy).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Name a prime number"}],
            **params)
        assert raw.headers["x-meterline-cache"] == "bypass"


def test_cache_control_and_header_controls(start_cached: Starter,
                                           mock_upstream: ServerThread) -> None:
    proxy = start_cached()
    q = "What is the speed of light in vacuum?"
    _, h = ask(proxy, q, headers={"cache-control": "no-store"})
    assert h["x-meterline-cache"] == "bypass"
    _, h = ask(proxy, q, headers={"x-meterline-cache": "off"})
    assert h["x-meterline-cache"] == "bypass"
    _, h = ask(proxy, q, headers={"cache-control": "no-cache"})  # skips lookup, still stores
    assert h["x-meterline-cache"] == "bypass"
    _, h = ask(proxy, q)
    assert h["x-meterline-cache"] == "hit-exact"
    _, h = ask(proxy, q, headers={"x-meterline-cache": "refresh"})
    assert h["x-meterline-cache"] == "bypass"
    _, h = ask(proxy, q, extra_body={"metadata": {"cache": '{"mode": "off"}'}})
    assert h["x-meterline-cache"] == "bypass"
    sent = mock_requests(mock_upstream.url)[-1]["body"]
    assert "metadata" not in sent and "cache" not in sent
    _, h = ask(proxy, q, extra_body={"cache": {"mode": "no-cache"}})
    assert h["x-meterline-cache"] == "bypass"
    assert "cache" not in mock_requests(mock_upstream.url)[-1]["body"]


def test_bad_cache_control_in_body_is_a_400(start_cached: Starter) -> None:
    proxy = start_cached()
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}],
                         "cache": {"mode": "sometimes"}},
                   headers={"authorization": "Bearer sk-demo-engineering"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "cache.mode"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_entries_expire_after_ttl(start_cached: Starter) -> None:
    proxy = start_cached(ttl_seconds=0.6, dynamic_ttl={"enabled": False})
    ask(proxy, "How long is a light year?")
    _, h = ask(proxy, "How long is a light year?")
    assert h["x-meterline-cache"] == "hit-exact"
    time.sleep(1.0)
    _, h = ask(proxy, "How long is a light year?")
    assert h["x-meterline-cache"] == "miss"


def test_dynamic_ttl_keeps_hot_entries_longer(start_cached: Starter) -> None:
    proxy = start_cached(ttl_seconds=0.8, dynamic_ttl={"growth": 4, "min_seconds": 0.1})
    ask(proxy, "What is a hot entry?")
    ask(proxy, "What is a cold entry?")
    _, h = ask(proxy, "What is a hot entry?")  # hit: lives 0.8 * 4 s from now
    assert h["x-meterline-cache"] == "hit-exact"
    time.sleep(1.2)
    assert ask(proxy, "What is a hot entry?")[1]["x-meterline-cache"] == "hit-exact"
    assert ask(proxy, "What is a cold entry?")[1]["x-meterline-cache"] == "miss"


def test_max_size_evicts_least_valuable_first(start_cached: Starter) -> None:
    proxy = start_cached(max_size=2)
    ask(proxy, "First question about tea?")
    assert ask(proxy, "First question about tea?")[1]["x-meterline-cache"] == "hit-exact"
    ask(proxy, "Second question about coffee?")  # never hit: least valuable
    ask(proxy, "Third question about juice?")  # partition over max_size -> evict one
    assert ask(proxy, "First question about tea?")[1]["x-meterline-cache"] == "hit-exact"
    assert ask(proxy, "Third question about juice?")[1]["x-meterline-cache"] == "hit-exact"
    assert ask(proxy, "Second question about coffee?")[1]["x-meterline-cache"] == "miss"


def stream_text(proxy: ServerThread, text: str, **params: Any) -> tuple[str, list[Any], str]:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], stream=True, **params)
    chunks = list(raw.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return content, chunks, raw.headers["x-meterline-cache"]


@pytest.mark.parametrize("usage", [False, True])
def test_stream_hit_replays_the_same_text_as_sse(start_cached: Starter, usage: bool) -> None:
    proxy = start_cached()
    params = {"stream_options": {"include_usage": True}} if usage else {}
    original, first_chunks, status = stream_text(proxy, "Stream me a haiku about caches", **params)
    assert status == "miss"
    replayed, chunks, status = stream_text(proxy, "Stream me a haiku about caches", **params)
    assert status == "hit-exact"
    assert replayed == original and len(chunks) > 3
    final = chunks[-1].model_extra or {}
    assert final["meterline"]["cache"] == "hit-exact" and final["meterline"]["cost_usd"] == 0
    assert final["meterline"]["saved_usd"] == pytest.approx(
        (first_chunks[-1].model_extra or {})["meterline"]["cost_usd"])
    if usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == first_chunks[-1].usage.completion_tokens
    else:
        assert all(c.usage is None for c in chunks)


def test_raw_replay_is_proper_sse(start_cached: Starter) -> None:
    proxy = start_cached()
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": "raw replay please"}]}
    auth = {"authorization": "Bearer sk-demo-sales"}
    httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=auth).read()
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=auth) as r:
        data = r.read()
    assert r.headers["x-meterline-cache"] == "hit-exact"
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in data.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]" and all(e.startswith(b"data: ") for e in events)


def test_cut_stream_is_never_cached(start_cached: Starter, mock_upstream: ServerThread) -> None:
    proxy = start_cached()
    fault(mock_upstream.url, "cut")
    with httpx.stream("POST", proxy.url + "/v1/chat/completions",
                      json={"model": "gpt-4o", "stream": True,
                            "messages": [{"role": "user", "content": "cut me off"}]},
                      headers={"authorization": "Bearer sk-demo-engineering"}) as r:
        assert b"upstream_unavailable" in r.read()
    assert stream_text(proxy, "cut me off")[2] == "miss"  # the cut answer was not stored
    assert stream_text(proxy, "cut me off")[2] == "hit-exact"


def test_stream_and_json_answers_are_cached_separately(start_cached: Starter) -> None:
    proxy = start_cached()
    ask(proxy, "Same words, other shape")
    assert stream_text(proxy, "Same words, other shape")[2] == "miss"


def test_exact_mode_never_serves_paraphrases(start_cached: Starter) -> None:
    proxy = start_cached(mode="exact")
    ask(proxy, "How do I reset my password?")
    assert ask(proxy, "How can I reset my password?")[1]["x-meterline-cache"] == "miss"
    assert ask(proxy, "How do I reset my password?")[1]["x-meterline-cache"] == "hit-exact"


def test_route_override_disables_cache(start_cached: Starter) -> None:
    proxy = start_cached()
    for _ in range(2):
        _, h = ask(proxy, "Please refactor this function")  # code-review route: enabled false
        assert h["x-meterline-cache"] == "bypass"


@pytest.mark.parametrize("changes,message", [
    ({"mode": "fuzzy"}, "field 'mode' has value 'fuzzy'"),
    ({"threshold": 1.5}, "field 'threshold' has value 1.5"),
    ({"colour": "blue"}, "field 'colour' has value 'blue'"),
    ({"match": {"threshold": 0.9}}, "match.threshold"),
    ({"overrides": {"departments": {"legal": {"mode": "exact"}}}},
     "field 'overrides.departments.legal' has value 'legal'"),
    ({"overrides": {"routes": {"nope": {"enabled": False}}}},
     "field 'overrides.routes.nope' has value 'nope'"),
    ({"shared_scopes": {"x": {"departments": ["sales", "legal"]}}},
     "field 'shared_scopes.x.departments' has value 'legal'"),
])
def test_bad_cache_yaml_names_file_field_and_value(tmp_path: Path, mock_upstream: ServerThread,
                                                    changes: dict[str, Any], message: str) -> None:
    from proxy.config.errors import ConfigError
    from proxy.config.loader import load_config
    from tests.support.servers import make_config_dir

    config_dir = make_config_dir(tmp_path, mock_upstream.url,
                                 edits={"cache.yaml": cache_yaml(**changes)})
    with pytest.raises(ConfigError) as err:
        load_config(config_dir)
    assert "cache.yaml" in str(err.value) and message in str(err.value)
