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

from proxy.demo.upstream import answer_for
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

    def start(*, routing: dict[str, Any] | None = None, **changes: Any) -> ServerThread:
        edits = {"cache.yaml": cache_yaml(**changes)}
        if routing is not None:
            edits["routing.yaml"] = routing
        return start_proxy(edits=edits, **overrides)

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


@pytest.mark.parametrize("mode", ["exact", "semantic"])
def test_the_exact_answer_is_asked_for_once_per_request(start_cached: Starter,
                                                        mode: str) -> None:
    """The probe before admission asks the backend for the exact answer; the lookup after it
    does not ask again (on Redis, a round trip per miss), unless the budget lowered the limit."""
    proxy = start_cached(mode=mode)
    backend = proxy.server.config.app.state.services.cache.backend
    asked: list[str] = []
    get_exact = backend.get_exact

    async def counted(scope: str, text_hash: str) -> Any:
        asked.append(text_hash)
        return await get_exact(scope, text_hash)

    backend.get_exact = counted
    question = f"How many lookups does {uuid.uuid4().hex[:8]} take?"
    _, miss = ask(proxy, question)
    assert miss["x-meterline-cache"] == "miss" and len(asked) == 1
    _, hit = ask(proxy, question)
    assert hit["x-meterline-cache"] == "hit-exact" and len(asked) == 2


def test_an_answer_stored_while_a_call_was_admitted_is_served_to_it(
        start_cached: Starter, mock_upstream: ServerThread) -> None:
    """B's probe misses; while B is being admitted (slowly: a Redis round trip), A asks the same,
    goes upstream and stores. B's lookup must find A's answer, not skip the exact lookup the
    probe did and pay for the same answer again."""
    import asyncio
    import concurrent.futures

    proxy = start_cached(mode="exact")
    services = proxy.server.config.app.state.services
    reserve, calls = services.spend.reserve, []

    async def slow_first(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:  # B, the first caller: admitted after A has landed
            await asyncio.sleep(1.0)
        return await reserve(*args, **kwargs)

    services.spend.reserve = slow_first
    question = f"Who stores first, {uuid.uuid4().hex[:8]}?"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        b = pool.submit(ask, proxy, question)
        while not calls:
            time.sleep(0.01)
        _, a_headers = ask(proxy, question)
        b_answer, b_headers = b.result()
    assert a_headers["x-meterline-cache"] == "miss"
    assert b_headers["x-meterline-cache"] == "hit-exact"
    assert upstream_calls(mock_upstream, question) == 1


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


def test_thousands_of_hits_on_one_entry_all_succeed(start_proxy: ProxyStarter) -> None:
    """Issue 18 item 0: each hit grows the TTL by growth**hits; past ~1,750 hits that power
    overflowed a float and every later hit of the most popular entry was a 500. Hit bookkeeping
    now runs after the answer is sent, so that overflow would no longer reach the client:
    test_grown_ttl_is_capped_without_overflow guards it; this one serves 2,500 hits of one entry
    (10,000 took 15-20 s of the suite and guarded nothing more)."""
    departments = yaml.safe_load((REPO_RULES / "departments.yaml").read_text())
    departments["departments"]["engineering"].update(rpm=100_000, tpm=1_000_000_000)
    proxy = start_proxy(edits={"cache.yaml": cache_yaml(), "departments.yaml": departments})
    body = {"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "What is the most asked question?"}]}
    auth = {"authorization": "Bearer sk-demo-engineering"}
    statuses: dict[tuple[int, str], int] = {}
    with httpx.Client(base_url=proxy.url, headers=auth, timeout=10) as http:
        answer = http.post("/v1/chat/completions", json=body).json()["choices"][0]
        for _ in range(2_500):
            r = http.post("/v1/chat/completions", json=body)
            outcome = (r.status_code, r.headers.get("x-meterline-cache", ""))
            statuses[outcome] = statuses.get(outcome, 0) + 1
            if r.status_code != 200:
                break
            assert r.json()["choices"][0]["message"] == answer["message"]
    assert statuses == {(200, "hit-exact"): 2_500}


@pytest.mark.redis
def test_a_hit_on_an_entry_with_huge_hit_count_is_served(
        start_proxy: ProxyStarter, redis_url: str, redis_prefix: str) -> None:
    """The same on Redis Stack, without sending thousands of requests: the entry's hit counter is
    set to where growth**hits overflows, then hit again (and again)."""
    import redis

    proxy = start_proxy(edits={"cache.yaml": cache_yaml()}, redis_url=redis_url,
                        redis_prefix=redis_prefix)
    question = "What is the second most asked question?"
    ask(proxy, question)
    _, headers = ask(proxy, question)
    entry_key = f"{redis_prefix}cache:e:{headers['x-meterline-cache-entry']}"
    with redis.Redis.from_url(redis_url) as r:
        r.hset(entry_key, "hits", 5000)
        for _ in range(3):
            _, headers = ask(proxy, question)
            assert headers["x-meterline-cache"] == "hit-exact"
        maximum = cache_yaml()["dynamic_ttl"].get("max_seconds", 86400.0)
        deadline = time.monotonic() + 10  # the expiry is written a few ms after the hit
        while r.pttl(entry_key) / 1000 <= maximum - 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        ttl_s = r.pttl(entry_key) / 1000
    assert maximum - 60 < ttl_s <= maximum  # grown to the cap, not past it


def test_any_error_in_hit_bookkeeping_still_serves_the_hit(start_cached: Starter) -> None:
    """Bookkeeping after a hit (hit count, expiry, counters) is written after the answer went
    out: whatever the write raises, the client gets the cached answer, not a 500, and the
    failure is counted; analytics (which writes pending bookkeeping first) still answers."""
    proxy = start_cached()
    question = "Which answer survives a broken hit counter?"
    first, _ = ask(proxy, question)
    backend = proxy.server.config.app.state.services.cache.backend

    async def broken_book(*_: Any) -> None:
        raise ValueError("not a backend error")

    backend.book = broken_book
    second, headers = ask(proxy, question)
    assert headers["x-meterline-cache"] == "hit-exact" and second == first
    failures = 'meterline_cache_failures_total{stage="bookkeeping"} '
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        exported = [line for line in httpx.get(proxy.url + "/metrics").text.splitlines()
                    if line.startswith(failures)]
        if exported and float(exported[0].rsplit(" ", 1)[1]) >= 1:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the failed bookkeeping write was not counted")
    analytics = httpx.get(proxy.url + "/v1/cache/analytics",
                          headers={"Authorization": "Bearer sk-demo-engineering"})
    assert analytics.status_code == 200, analytics.text


@pytest.mark.parametrize("ttl,growth,hits,cap,expected", [
    (600.0, 1.5, 0, 86400.0, 600.0),
    (600.0, 1.5, 2, 86400.0, 1350.0),
    (600.0, 1.5, 13, 86400.0, 86400.0),  # 600 * 1.5**13 > 86400
    (600.0, 1.5, 10**9, 86400.0, 86400.0),
    (1e-3, 10.0, 10**12, 1e9, 1e9),
    (600.0, 1.0, 10**9, 86400.0, 600.0),
    (90000.0, 1.5, 5, 86400.0, 90000.0),  # already past the cap: the caller clamps
])
def test_grown_ttl_is_capped_without_overflow(ttl: float, growth: float, hits: int, cap: float,
                                              expected: float) -> None:
    from proxy.cache.semantic_cache import grown_ttl

    assert grown_ttl(ttl, growth, hits, cap) == pytest.approx(expected)


def ask_limited(proxy: ServerThread, text: str, limit: int | None,
                **params: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw chat.completion and headers for `text` with `max_tokens: limit` (None: no limit)."""
    body: dict[str, Any] = {"model": "gpt-4o-mini", **params,
                            "messages": [{"role": "user", "content": text}]}
    if limit is not None:
        body["max_tokens"] = limit
    r = httpx.post(proxy.url + "/v1/chat/completions", json=body,
                   headers={"authorization": "Bearer sk-demo-engineering"})
    assert r.status_code == 200, r.text
    return r.json(), dict(r.headers)


def test_a_cached_answer_longer_than_the_new_limit_is_not_served(start_cached: Starter) -> None:
    """Issue 18 item 5: limits were bucketed by powers of two, so a 37-token answer stored for
    max_tokens 64 was served to a request that allowed 33. An entry is served only when its
    completion tokens fit the new request's limit; then any limit that fits shares it."""
    proxy = start_cached()
    # a fixed question: the mock's answer to it is 40 tokens (a random one could land on 33)
    question = "How long is a complete answer 2?"
    full, h1 = ask_limited(proxy, question, 64)
    tokens = full["usage"]["completion_tokens"]
    assert full["choices"][0]["finish_reason"] == "stop" and 33 < tokens < 64
    assert h1["x-meterline-cache"] == "miss"
    shorter, h2 = ask_limited(proxy, question, tokens - 1)  # same power-of-two bucket as 64
    assert h2["x-meterline-cache"] == "miss"
    assert shorter["usage"]["completion_tokens"] <= tokens - 1
    for limit in (tokens, 1000, None):  # the complete answer fits: served from the cache
        again, headers = ask_limited(proxy, question, limit)
        assert headers["x-meterline-cache"] == "hit-exact", limit
        assert again["choices"][0]["message"] == full["choices"][0]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_length_cut_answer_is_served_only_to_the_same_limit(start_cached: Starter,
                                                             stream: bool) -> None:
    """A `finish_reason: length` answer is what that limit gets, not what a larger (or no)
    limit would: asked with max_tokens 20 (cut), then 32 (same bucket), the cut answer was
    served as hit-exact. And a cut answer never displaces the complete one."""
    proxy = start_cached()
    # an answer longer than 32 tokens (the mock's 4 characters a token), so that 32 cuts it
    # too: about 1 question in 200 has a complete answer that fits 32 and is served to it
    question = next(q for q in (f"Tell me everything about limits {uuid.uuid4().hex[:6]}"
                                for _ in range(100)) if len(answer_for(q, 24)) > 36 * 4)
    if stream:
        _, _, status = stream_text(proxy, question)
        assert status == "miss"
        cut_text, chunks, status = stream_text(proxy, question, max_tokens=20)
        assert status == "miss"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert stream_text(proxy, question, max_tokens=32)[2] == "miss"
        again, _, status = stream_text(proxy, question, max_tokens=20)
        assert status == "hit-exact" and again == cut_text
        assert stream_text(proxy, question)[2] == "hit-exact"
        return
    full, _ = ask_limited(proxy, question, None)
    cut, h1 = ask_limited(proxy, question, 20)
    assert h1["x-meterline-cache"] == "miss" and cut["choices"][0]["finish_reason"] == "length"
    bigger, h2 = ask_limited(proxy, question, 32)
    assert h2["x-meterline-cache"] == "miss"
    assert bigger["choices"][0]["message"]["content"] != cut["choices"][0]["message"]["content"]
    same, h3 = ask_limited(proxy, question, 20)
    assert h3["x-meterline-cache"] == "hit-exact" and same["choices"] == cut["choices"]
    unlimited, h4 = ask_limited(proxy, question, None)
    assert h4["x-meterline-cache"] == "hit-exact" and unlimited["choices"] == full["choices"]


FAST_RETRIES = {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.02, "retry_after_max": 0}


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_answer_is_not_served_as_the_planned_models(
        start_cached: Starter, mock_upstream: ServerThread, stream: bool) -> None:
    """Issue 18 item 6: entries were stored under the planned model, so once gpt-4.1 failed over
    to gpt-4o-mini every later gpt-4.1 request got the mini answer for the whole TTL. The answer
    is stored under the model that produced it, and served (naming that model) only to requests
    for that model."""
    routing = {"rules": [{"name": "big", "match": {"model": ["gpt-4.1"]}, "target": "gpt-4.1",
                          "fallbacks": ["gpt-4o-mini"]}], "reliability": FAST_RETRIES}
    proxy = start_cached(overrides={"routes": {}}, routing=routing)
    question = f"Which model answers when the big one is down {uuid.uuid4().hex[:6]}?"

    def ask_model(model: str) -> tuple[str, str]:
        if stream:
            raw = client(proxy).chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": question}], stream=True)
            chunks = list(raw.parse())
            return chunks[0].model, raw.headers["x-meterline-cache"]
        raw_json = client(proxy).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": question}])
        return raw_json.parse().model, raw_json.headers["x-meterline-cache"]

    fault(mock_upstream.url, "500", times=2)  # gpt-4.1: attempt + 1 retry, then gpt-4o-mini
    assert ask_model("gpt-4.1") == ("gpt-4o-mini", "miss")
    assert ask_model("gpt-4.1") == ("gpt-4.1", "miss")  # not the fallback's answer
    assert ask_model("gpt-4.1") == ("gpt-4.1", "hit-exact")
    assert ask_model("gpt-4o-mini") == ("gpt-4o-mini", "hit-exact")  # the mini answer, for mini


def test_long_questions_bypass_the_cache(start_cached: Starter) -> None:
    """Entries are counted, not weighed: before, 1000 questions of 8 MB each could be stored per
    department and model. A question over max_question_chars is never stored nor looked up."""
    proxy = start_cached(max_question_chars=5000)
    question = "Why " + "really " * 1000 + f"{uuid.uuid4().hex}?"
    assert ask(proxy, question)[1]["x-meterline-cache"] == "bypass"
    assert ask(proxy, question)[1]["x-meterline-cache"] == "bypass"
    short = f"Short question {uuid.uuid4().hex}?"
    ask(proxy, short)
    assert ask(proxy, short)[1]["x-meterline-cache"] == "hit-exact"


def test_hits_are_counted_and_reportable_right_after_they_were_served(
        start_cached: Starter) -> None:
    """Hit bookkeeping is written in batches a few ms after the hits; analytics and reports
    write what is pending first, so they see every hit this replica served."""
    proxy = start_cached()
    question = f"How many times was question {uuid.uuid4().hex[:6]} answered from cache?"
    ask(proxy, question)
    for _ in range(4):
        _, headers = ask(proxy, question)
    auth = {"Authorization": "Bearer sk-demo-engineering"}
    analytics = httpx.get(proxy.url + "/v1/cache/analytics", headers=auth).json()
    top = [q for q in analytics["top_cached_queries"]
           if q["entry_id"] == headers["x-meterline-cache-entry"]]
    assert analytics["hits_by_kind"]["exact"] == 4 and top[0]["hits"] == 4
    report = httpx.post(proxy.url + "/v1/cache/report", headers=auth,
                        json={"request_id": headers["x-request-id"]})
    assert report.status_code == 200, report.text
    assert report.json()["evicted"] is True
