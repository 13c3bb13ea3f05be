"""Spend and budgets through the real proxy on embedded state and on Redis Stack: cost per
response, cut streams, 429 on exhaustion, the concurrent budget race, chargeback, Slack."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from proxy.app import create_app
from proxy.settings import Settings
from proxy.spend.pricing import load_pricing, to_nanos
from tests.support.servers import ServerThread, make_config_dir
from tests.support.slack_standin import SlackStandin

ADMIN = {"authorization": "Bearer sk-demo-admin"}
ENG = {"authorization": "Bearer sk-demo-engineering"}
NO_CACHE = "enabled: false\n"
PRICING = load_pricing()


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


def departments_yaml(engineering: dict[str, Any], slack_env: str = "TEST_SLACK_URL") -> str:
    base = {"allowed_models": ["*"]}
    depts = {name: dict(base) for name in ("sales", "marketing", "executive")}
    depts["engineering"] = {**base, **engineering}
    for spec in depts.values():
        spec["allowed_models"] = ["*"]
    return yaml.safe_dump({"version": 1, "notifications": {"slack_webhook_env": slack_env},
                           "departments": depts})


@pytest.fixture
def boot(mock_upstream: ServerThread,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerThread]]:
    """Like start_proxy, with extra environment (Slack URL, fail mode) for the proxy."""
    started: list[ServerThread] = []

    def start_one(edits: dict[str, Any], env: dict[str, str], **overrides: Any) -> ServerThread:
        config_dir = make_config_dir(tmp_path_factory.mktemp("rules"), mock_upstream.url,
                                     edits=edits)
        settings = Settings.from_env({"MOCK_UPSTREAM_KEY": "sk-upstream-test", **env},
                                     config_dir=config_dir, demo=True, **overrides)
        server = ServerThread(create_app(settings)).start()
        started.append(server)
        return server

    yield start_one
    for server in started:
        server.stop()


def start(boot: Callable[..., ServerThread], state: dict[str, Any],
          engineering: dict[str, Any], env: dict[str, str] | None = None,
          cache: str = NO_CACHE) -> ServerThread:
    edits = {"departments.yaml": departments_yaml(engineering), "cache.yaml": cache}
    return boot(edits, env or {}, **state)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat(proxy: ServerThread, text: str, **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "messages": ask(text), **body}
    return httpx.post(proxy.url + "/v1/chat/completions", json=payload, headers=ENG, timeout=30)


def records(proxy: ServerThread) -> list[dict[str, Any]]:
    r = httpx.get(proxy.url + "/admin/spend", params={"by": "department"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    recent: list[dict[str, Any]] = r.json()["recent"]
    return recent


def expected_nanos(model: str, usage: dict[str, Any]) -> int:
    return PRICING.cost(model, usage).nanos


def test_non_streamed_cost_equals_pricing_table(boot: Callable[..., ServerThread],
                                                state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 5}})
    r = chat(proxy, "price this answer " + uuid.uuid4().hex)
    assert r.status_code == 200
    nanos = expected_nanos("gpt-4o-mini", r.json()["usage"])
    assert nanos > 0
    assert to_nanos(float(r.headers["x-meterline-cost-usd"])) == nanos
    record = records(proxy)[0]
    assert record["request_id"] == r.headers["x-request-id"]
    assert to_nanos(record["cost"]) == nanos and record["cost_estimated"] is False
    assert record["input_tokens"] == r.json()["usage"]["prompt_tokens"]
    metrics = httpx.get(proxy.url + "/metrics").text
    labels = '{department="engineering",period="day"}'
    assert gauge(metrics, "meterline_budget_remaining_dollars" + labels) == pytest.approx(
        5 - nanos / 1e9, abs=1e-9)
    assert gauge(metrics, "meterline_budget_limit_dollars" + labels) == 5.0


def gauge(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exported")


def test_streamed_cost_equals_pricing_table(boot: Callable[..., ServerThread],
                                            state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 5}})
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-demo-engineering",
                           max_retries=0)
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=ask("stream and price " + uuid.uuid4().hex), stream=True,
        stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None
    info = (chunks[-1].model_extra or {})["meterline"]
    nanos = expected_nanos("gpt-4o-mini", usage.model_dump())
    assert to_nanos(info["cost_usd"]) == nanos > 0
    assert info["input_tokens"] == usage.prompt_tokens
    assert info["output_tokens"] == usage.completion_tokens
    assert info["cache"] == "off" and info["estimated"] is False
    assert 0 < info["budget_remaining_usd"] == pytest.approx(5 - nanos / 1e9, abs=1e-6)
    assert to_nanos(records(proxy)[0]["cost"]) == nanos


def test_cut_stream_records_estimated_spend(boot: Callable[..., ServerThread],
                                            state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 5}})
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", headers=ENG, json={
            "model": "gpt-4o-mini", "stream": True,
            "messages": ask("cut me off #fault:cut " + uuid.uuid4().hex)}) as r:
        body = r.read()
    assert r.status_code == 200 and b'"error"' in body and body.endswith(b"data: [DONE]\n\n")
    found = _wait_for_record(proxy, r.headers["x-request-id"])
    assert found["cost_estimated"] is True and found["cost"] > 0
    assert found["output_tokens"] > 0 and found["error"] is not None


def _wait_for_record(proxy: ServerThread, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in records(proxy):
            if record["request_id"] == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no record for {request_id}")


def test_exhausted_budget_is_429_with_retry_after(boot: Callable[..., ServerThread],
                                                  state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 0.0002}, "cap_max_tokens": False})
    first = chat(proxy, "small spend " + uuid.uuid4().hex, max_tokens=100)
    assert first.status_code == 200
    refused = chat(proxy, "one more " + uuid.uuid4().hex, max_tokens=300)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "daily budget" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400
    metrics = httpx.get(proxy.url + "/metrics").text
    assert ('meterline_budget_rejections_total{department="engineering",'
            'reason="budget_exhausted"} 1.0') in metrics


def test_concurrent_requests_never_overspend(boot: Callable[..., ServerThread],
                                             state: dict[str, Any]) -> None:
    limit = 0.002
    proxy = start(boot, state, {"budgets": {"daily": limit}, "cap_max_tokens": False})
    prompts = [f"race {i:03d} {uuid.uuid4().hex[:8]}" for i in range(150)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda p: chat(proxy, p, max_tokens=200).status_code, prompts))
    assert set(statuses) == {200, 429}
    worst = PRICING.worst_case("gpt-4o-mini", 20)
    worst_nanos = worst[0] + int(worst[1] * 200) + 1
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    eng = next(d for d in budgets if d["department"] == "engineering")
    spent = to_nanos(eng["budgets"][0]["spent_dollars"])
    assert eng["budgets"][0]["reserved_dollars"] == 0
    assert to_nanos(limit) / 2 < spent <= to_nanos(limit) + worst_nanos
    total = chargeback(proxy)["total"]
    assert total["requests"] == statuses.count(200)
    assert total["cost_nanos"] == spent  # budget counters and usage records agree exactly


def chargeback(proxy: ServerThread, **params: str) -> dict[str, Any]:
    r = httpx.get(proxy.url + "/admin/chargeback", params={"format": "json", **params},
                  headers=ADMIN)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_chargeback_totals_equal_records(boot: Callable[..., ServerThread],
                                         state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 5}})
    for i in range(4):
        assert chat(proxy, f"bill me {i} {uuid.uuid4().hex}").status_code == 200
    assert chat(proxy, "bill me too " + uuid.uuid4().hex, model="gpt-4o").status_code == 200
    report = chargeback(proxy)
    spend = httpx.get(proxy.url + "/admin/spend", params={"by": "model"}, headers=ADMIN).json()
    nanos = sum(to_nanos(r["cost"]) for r in spend["recent"])
    assert report["total"]["cost_nanos"] == nanos > 0
    assert report["total"]["requests"] == 5 == spend["requests"]
    by_model = {row["model"]: row for row in report["rows"]}
    assert by_model["gpt-4o-mini"]["requests"] == 4 and by_model["gpt-4o"]["requests"] == 1
    assert {row["model"]: row["cost_nanos"] for row in spend["rows"]} == {
        m: row["cost_nanos"] for m, row in by_model.items()}


@pytest.mark.redis
def test_chargeback_survives_restart_on_redis(boot: Callable[..., ServerThread], redis_url: str,
                                               redis_prefix: str) -> None:
    shared = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    first = start(boot, shared, {"budgets": {"daily": 5}})
    for i in range(3):
        assert chat(first, f"persist {i} {uuid.uuid4().hex}").status_code == 200
    before = chargeback(first)
    csv_before = httpx.get(first.url + "/admin/chargeback", params={"format": "csv"},
                           headers=ADMIN).text
    first.stop()
    second = start(boot, shared, {"budgets": {"daily": 5}})
    assert chargeback(second) == before
    assert before["total"]["requests"] == 3
    csv_after = httpx.get(second.url + "/admin/chargeback", params={"format": "csv"},
                          headers=ADMIN).text
    assert csv_after == csv_before
    status = httpx.get(second.url + "/v1/spend", headers=ENG).json()
    assert to_nanos(status["today_usd"]) == before["total"]["cost_nanos"]


def test_soft_threshold_notice_reaches_slack_once(boot: Callable[..., ServerThread],
                                                  state: dict[str, Any],
                                                  slack: SlackStandin) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 0.001}, "soft_alerts": [0.5]},
                  env={"TEST_SLACK_URL": slack.url})
    spent = 0
    while spent < 600_000:  # past 50 % of $0.001 (nanos), well short of exhausting it
        r = chat(proxy, "notice " + uuid.uuid4().hex, max_tokens=100)
        assert r.status_code == 200
        spent += to_nanos(float(r.headers["x-meterline-cost-usd"]))
    deadline = time.monotonic() + 5
    while not slack.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    for _ in range(3):
        assert chat(proxy, "after " + uuid.uuid4().hex, max_tokens=100).status_code == 200
    time.sleep(0.5)  # a duplicate would have been posted in the background by now
    texts = [m["text"] for m in slack.messages]
    assert len(texts) == 1
    assert texts[0].startswith(":warning: *engineering* has used 50% of its daily budget")


def test_cached_answer_costs_nothing_and_counts_savings(boot: Callable[..., ServerThread],
                                                        state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"budgets": {"daily": 5}}, cache="enabled: true\nmode: exact\n")
    text = "cache me " + uuid.uuid4().hex
    first = chat(proxy, text, temperature=0)
    second = chat(proxy, text, temperature=0)
    assert first.status_code == second.status_code == 200
    paid = to_nanos(float(first.headers["x-meterline-cost-usd"]))
    assert paid > 0 and second.headers["x-meterline-cache"] == "hit-exact"
    assert float(second.headers["x-meterline-cost-usd"]) == 0
    total = chargeback(proxy)["total"]
    assert total["cost_nanos"] == paid and total["saved_nanos"] == paid
    assert total["requests"] == 2


EXACT_CACHE = "enabled: true\nmode: exact\n"


def test_cached_answer_is_served_when_an_upstream_call_would_not_fit(
        boot: Callable[..., ServerThread], state: dict[str, Any]) -> None:
    """A hit spends nothing: it needs no room for the worst case of a call it does not make
    (before, it was refused with 429 like the call, or its output capped so the cached answer
    no longer fitted and a capped answer was bought instead)."""
    proxy = start(boot, state, {"budgets": {"daily": 0.0002}, "cap_max_tokens": False},
                  cache=EXACT_CACHE)
    text = "what fits " + uuid.uuid4().hex
    first = chat(proxy, text, max_tokens=100, temperature=0)
    assert first.status_code == 200 and first.headers["x-meterline-cache"] == "miss"
    refused = chat(proxy, "a new question " + uuid.uuid4().hex, max_tokens=300, temperature=0)
    assert refused.status_code == 429  # its worst case does not fit what is left
    again = chat(proxy, text, max_tokens=300, temperature=0)
    assert again.status_code == 200, again.text
    assert again.headers["x-meterline-cache"] == "hit-exact"
    assert again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert float(again.headers["x-meterline-cost-usd"]) == 0
    total = chargeback(proxy)["total"]
    assert total["cost_nanos"] == to_nanos(float(first.headers["x-meterline-cost-usd"]))
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    eng = next(d for d in budgets if d["department"] == "engineering")
    assert eng["budgets"][0]["reserved_dollars"] == 0  # the hit held nothing


def test_cached_answer_is_refused_once_the_budget_is_spent(
        boot: Callable[..., ServerThread], state: dict[str, Any]) -> None:
    """A spent budget stops the department, cached answers included; nothing about the refused
    hit is counted as a hit or a saving."""
    proxy = start(boot, state, {"budgets": {"daily": 5}}, cache=EXACT_CACHE)
    text = "spent " + uuid.uuid4().hex
    first = chat(proxy, text, temperature=0)
    assert first.status_code == 200
    assert chat(proxy, text, temperature=0).headers["x-meterline-cache"] == "hit-exact"
    config_dir = Path(proxy.server.config.app.state.services.settings.config_dir)
    spent = float(first.headers["x-meterline-cost-usd"])
    (config_dir / "departments.yaml").write_text(departments_yaml(
        {"budgets": {"daily": spent / 2}}))  # lowered below what was spent
    assert httpx.post(proxy.url + "/admin/reload", headers=ADMIN).status_code == 200
    refused = chat(proxy, text, temperature=0)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "x-meterline-cache" not in refused.headers
    total = chargeback(proxy)["total"]
    assert total["requests"] == 2 and total["saved_nanos"] == to_nanos(spent)


def test_cached_answers_count_towards_the_rate_limit(
        boot: Callable[..., ServerThread], state: dict[str, Any]) -> None:
    proxy = start(boot, state, {"rpm": 3}, cache=EXACT_CACHE)
    text = "rate me " + uuid.uuid4().hex
    statuses = [chat(proxy, text, temperature=0) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert [r.headers.get("x-meterline-cache") for r in statuses[:3]] == [
        "miss", "hit-exact", "hit-exact"]
    error = statuses[3].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "rpm" in error["message"]
    assert chargeback(proxy)["total"]["requests"] == 3


def test_an_answer_cut_by_the_budgets_cap_is_served_only_at_that_cap(
        boot: Callable[..., ServerThread], state: dict[str, Any]) -> None:
    """The exact probe runs before the budget caps max_tokens: the lookup and the store go on at
    the capped limit, so the cut answer is kept for that limit, never served to the request's
    own once the budget has room again."""
    engineering = {"budgets": {"daily": 0.0000075}, "cap_max_tokens": True,
                   "min_capped_tokens": 1}
    proxy = start(boot, state, engineering, cache=EXACT_CACHE)
    text = "cut me " + uuid.uuid4().hex
    capped = chat(proxy, text, max_tokens=5000, temperature=0)
    assert capped.status_code == 200, capped.text
    cap = int(capped.headers["x-meterline-max-tokens-capped"])
    assert capped.json()["choices"][0]["finish_reason"] == "length" and cap < 5000
    config_dir = Path(proxy.server.config.app.state.services.settings.config_dir)
    (config_dir / "departments.yaml").write_text(departments_yaml({"budgets": {"daily": 5}}))
    assert httpx.post(proxy.url + "/admin/reload", headers=ADMIN).status_code == 200
    whole = chat(proxy, text, max_tokens=5000, temperature=0)
    assert whole.status_code == 200 and whole.headers["x-meterline-cache"] == "miss"
    assert whole.json()["choices"][0]["finish_reason"] == "stop"
    again = chat(proxy, text, max_tokens=cap, temperature=0)
    assert again.headers["x-meterline-cache"] == "hit-exact"
    assert again.json()["choices"][0]["message"] == capped.json()["choices"][0]["message"]


def test_a_failed_probe_then_a_budget_cap_is_answered_uncached_and_holds_nothing(
        boot: Callable[..., ServerThread], state: dict[str, Any]) -> None:
    """The exact probe fails with an error nobody planned for (a corrupt entry, say): the call
    goes on uncached; when the budget then caps its output, the cap must not trip over the
    failed probe (it answered 500 and left the capped hold for the reservation's TTL)."""
    engineering = {"budgets": {"daily": 0.0000075}, "cap_max_tokens": True,
                   "min_capped_tokens": 1}
    proxy = start(boot, state, engineering, cache=EXACT_CACHE)
    backend = proxy.server.config.app.state.services.cache.backend

    async def corrupt(scope: str, text_hash: str) -> Any:
        raise ValueError("a corrupt entry")

    backend.get_exact = corrupt
    r = chat(proxy, "probe fails " + uuid.uuid4().hex, max_tokens=5000, temperature=0)
    assert r.status_code == 200, r.text
    assert r.headers["x-meterline-cache"] == "bypass"
    assert int(r.headers["x-meterline-max-tokens-capped"]) < 5000
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    eng = next(d for d in budgets if d["department"] == "engineering")
    assert eng["budgets"][0]["reserved_dollars"] == 0
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'meterline_cache_failures_total{stage="lookup"} 1.0' in metrics
