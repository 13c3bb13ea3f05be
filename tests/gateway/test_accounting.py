"""What a call costs (the client, the stream's last event and the usage record say the same),
and budget reservations priced from a request's token limits and choice counts."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.conftest import ProxyStarter
from tests.gateway.shapes import ENG, NO_CACHE, ask, below_min
from tests.support.servers import ServerThread, fault, mock_requests, providers_with_models


def engineering_only(engineering: dict[str, Any]) -> str:
    """departments.yaml where engineering has the given settings and the rest are unlimited."""
    base = {"allowed_models": ["*"]}
    depts: dict[str, Any] = {name: dict(base) for name in ("sales", "marketing", "executive")}
    depts["engineering"] = {**base, **engineering}
    return yaml.safe_dump({"version": 1, "departments": depts})


def budget_proxy(start_proxy: ProxyStarter, engineering: dict[str, Any]) -> ServerThread:
    return start_proxy(edits={"departments.yaml": engineering_only(engineering),
                              "cache.yaml": NO_CACHE, "routing.yaml": "rules: []\n"})


# Negative or zero token limits and choice counts: OpenAI refuses them, and the proxy prices its
# budget reservation from them, so a negative max_tokens made the reservation negative (an
# exhausted department was admitted) and a cached answer was served for it.
BELOW_MIN = [
    ("/v1/chat/completions", {"messages": ask("hi"), "max_tokens": -1}, "max_tokens", -1),
    ("/v1/chat/completions", {"messages": ask("hi"), "max_tokens": 0}, "max_tokens", 0),
    ("/v1/chat/completions", {"messages": ask("hi"), "max_completion_tokens": -7},
     "max_completion_tokens", -7),
    ("/v1/chat/completions", {"messages": ask("hi"), "n": 0}, "n", 0),
    ("/v1/chat/completions", {"messages": ask("hi"), "n": -2}, "n", -2),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -5}, "max_tokens", -5),
    ("/v1/responses", {"input": "hi", "max_output_tokens": -5}, "max_output_tokens", -5),
]


@pytest.mark.parametrize(("path", "body", "name", "value"), BELOW_MIN)
def test_token_limits_and_n_below_one_are_400(proxy: ServerThread, mock_upstream: ServerThread,
                                              path: str,
                                              body: dict[str, Any], name: str,
                                              value: int) -> None:
    marker = uuid.uuid4().hex
    r = httpx.post(proxy.url + path, json={"model": "gpt-4o-mini", **body, "user": marker},
                   headers=ENG)
    assert r.status_code == 400
    assert r.json() == below_min(name, value)
    assert not [q for q in mock_requests_for(mock_upstream, path)
                if q["body"].get("user") == marker]


def mock_requests_for(mock: ServerThread, path: str) -> list[dict[str, Any]]:
    return [r for r in mock_requests(mock.url) if r["path"] == path]


def test_negative_max_tokens_does_not_get_past_an_exhausted_budget(
        start_proxy: ProxyStarter) -> None:
    proxy = budget_proxy(start_proxy, {"budgets": {"daily": 0.000001}, "cap_max_tokens": False})
    body = {"model": "gpt-4o-mini", "messages": ask("free lunch " + uuid.uuid4().hex)}
    refused = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=ENG)
    assert refused.status_code == 429
    sneaky = httpx.post(proxy.url + "/v1/chat/completions",
                        json={**body, "max_tokens": -10**12}, headers=ENG)
    assert sneaky.status_code == 400, sneaky.text


def test_budget_reservation_counts_every_choice(start_proxy: ProxyStarter) -> None:
    # gpt-4o-mini output is $0.60/M: 100 tokens reserve $0.00006, 64 choices x 100 = $0.00384.
    proxy = budget_proxy(start_proxy, {"budgets": {"daily": 0.002}, "cap_max_tokens": False})
    body = {"model": "gpt-4o-mini", "messages": ask("choices " + uuid.uuid4().hex),
            "max_tokens": 100}
    one = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=ENG)
    assert one.status_code == 200, one.text
    many = httpx.post(proxy.url + "/v1/chat/completions", json={**body, "n": 64}, headers=ENG)
    assert many.status_code == 429, many.text
    assert many.json()["error"]["code"] == "insufficient_quota"


def test_capped_max_tokens_is_per_choice(start_proxy: ProxyStarter,
                                        mock_upstream: ServerThread) -> None:
    proxy = budget_proxy(start_proxy, {"budgets": {"daily": 0.001}, "cap_max_tokens": True})
    text = "capped choices " + uuid.uuid4().hex
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG, json={
        "model": "gpt-4o-mini", "messages": ask(text), "max_tokens": 1000, "n": 4})
    assert r.status_code == 200, r.text
    cap = int(r.headers["x-meterline-max-tokens-capped"])
    sent = [q["body"] for q in mock_requests_for(mock_upstream, "/v1/chat/completions")
            if q["body"]["messages"][-1].get("content") == text][-1]
    assert sent["max_tokens"] == cap and sent["n"] == 4
    assert 0 < cap * 4 * 0.6 <= 1000  # micro-dollars: four choices fit in the $0.001 budget


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", {"messages": ask("cap name"), "max_completion_tokens": 5000},
     "max_completion_tokens"),
    ("/v1/responses", {"input": "cap name", "max_output_tokens": 5000}, "max_output_tokens"),
])
def test_cap_keeps_the_token_limit_field_the_endpoint_uses(
        start_proxy: ProxyStarter, mock_upstream: ServerThread, path: str,
        body: dict[str, Any], field: str) -> None:
    """o-series chat models reject `max_tokens`, and the Responses API only knows
    `max_output_tokens`: a capped request must keep the field the client sent."""
    proxy = budget_proxy(start_proxy, {"budgets": {"daily": 0.001}, "cap_max_tokens": True})
    marker = uuid.uuid4().hex
    payload = {"model": "gpt-4o-mini", **body, "user": marker}
    r = httpx.post(proxy.url + path, json=payload, headers=ENG)
    assert r.status_code == 200, r.text
    cap = int(r.headers["x-meterline-max-tokens-capped"])
    sent = [q["body"] for q in mock_requests_for(mock_upstream, path)
            if q["body"].get("user") == marker]
    assert len(sent) == 1
    assert sent[0][field] == cap < 5000
    assert "max_tokens" not in sent[0]


# ----- exact money -----------------------------------------------------------------------------

ADMIN = {"authorization": "Bearer sk-demo-admin"}
SALES = {"authorization": "Bearer sk-demo-sales"}
NO_CACHE_EDITS = {"cache.yaml": NO_CACHE}
# The mock bills len(content) // 4 + 4 prompt tokens per message and caps the answer at
# max_tokens: this body is used as 81 prompt / 17 completion tokens of gpt-4o-mini.
BODY_81_17 = {"model": "gpt-4o-mini", "max_tokens": 17,
              "messages": [{"role": "user", "content": "x" * 308}]}
COST_81_17 = Decimal("0.00002235")  # 81 x $0.15/1M + 17 x $0.60/1M, exactly


def record_of(proxy: ServerThread, request_id: str) -> dict[str, Any]:
    spend = httpx.get(proxy.url + "/admin/spend", headers=ADMIN).json()
    found = [r for r in spend["recent"] if r["request_id"] == request_id]
    assert found, spend["recent"]
    return found[0]


def stream_events(proxy: ServerThread, body: dict[str, Any]) -> tuple[str, list[Any]]:
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", headers=SALES,
                      json={**body, "stream": True}) as r:
        raw = r.read()
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n")
              if line.startswith(b"data: {")]
    return r.headers["x-request-id"], events


def test_the_81_17_call_costs_exactly_0_00002235_everywhere(
        start_proxy: ProxyStarter, state: dict[str, Any]) -> None:
    proxy = start_proxy(edits=NO_CACHE_EDITS, **state)
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=SALES, json=BODY_81_17)
    assert r.status_code == 200
    assert (r.json()["usage"]["prompt_tokens"], r.json()["usage"]["completion_tokens"]) == (81, 17)
    assert Decimal(r.headers["x-meterline-cost-usd"]) == COST_81_17
    record = record_of(proxy, r.headers["x-request-id"])
    assert record["cost_nanos"] == 22_350 and Decimal(str(record["cost"])) == COST_81_17

    request_id, events = stream_events(proxy, BODY_81_17)
    info = events[-1]["meterline"]
    assert (info["input_tokens"], info["output_tokens"]) == (81, 17)
    assert Decimal(str(info["cost_usd"])) == COST_81_17 and info["cost_nanos"] == 22_350
    assert record_of(proxy, request_id)["cost_nanos"] == 22_350


def test_a_10_token_embedding_is_not_free(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(edits=NO_CACHE_EDITS)
    r = httpx.post(proxy.url + "/v1/embeddings", headers=SALES,
                   json={"model": "text-embedding-3-small", "input": "y" * 40})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 10
    assert Decimal(r.headers["x-meterline-cost-usd"]) == Decimal("0.0000002")
    assert record_of(proxy, r.headers["x-request-id"])["cost_nanos"] == 200


def test_a_model_without_a_price_is_billed_at_the_default_and_flagged(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    """gpt-4o-audio-preview was billed as gpt-4o (a '-suffix' counted as a snapshot), priced."""
    proxy = start_proxy(edits={**NO_CACHE_EDITS, **providers_with_models(
        mock_upstream.url, "gpt-4o-audio-preview")})
    body = {"model": "gpt-4o-audio-preview", "max_tokens": 17,
            "messages": [{"role": "user", "content": "x" * 308}]}
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ADMIN, json=body)
    assert r.status_code == 200
    assert Decimal(r.headers["x-meterline-cost-usd"]) == Decimal("0.00132")  # $10 / $30 per 1M
    record = record_of(proxy, r.headers["x-request-id"])
    assert (record["priced"], record["cost_estimated"], record["cost_nanos"]) == (
        False, True, 1_320_000)
    metrics = httpx.get(proxy.url + "/metrics").text
    unpriced = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("meterline_unpriced_requests_total{")}
    assert unpriced.pop('meterline_unpriced_requests_total{model="gpt-4o-audio-preview"}') == 1
    assert set(unpriced.values()) == {0.0}


class BrokenEmbedder:
    """An embedder failing in a way nobody planned for (not an EmbeddingError or a timeout)."""

    async def embed(self, texts: Any) -> Any:
        raise RuntimeError("embedder bug")

    async def aclose(self) -> None:
        return None


def metric_value(proxy: ServerThread, name: str, labels: str) -> float:
    for line in httpx.get(proxy.url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not exported")


@pytest.mark.parametrize(("stage", "headers"), [
    ("lookup", {}),  # the semantic lookup embeds the prompt before going upstream
    ("store", {"x-meterline-cache": "refresh"}),  # no lookup: embedded after the answer came
])
def test_an_embedder_failure_costs_neither_the_answer_nor_the_accounting(
        start_proxy: ProxyStarter, state: dict[str, Any], stage: str,
        headers: dict[str, str]) -> None:
    proxy = start_proxy(edits={"cache.yaml": "enabled: true\nmode: semantic\n"}, **state)
    services = proxy.server.config.app.state.services
    services.cache.embedder = BrokenEmbedder()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "embed " + stage}]}
    r = httpx.post(proxy.url + "/v1/chat/completions", json=body,
                   headers={**SALES, **headers})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("Mock answer")
    record = record_of(proxy, r.headers["x-request-id"])
    assert record["cost_nanos"] == int(Decimal(r.headers["x-meterline-cost-usd"]) * 10**9) > 0
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    sales = next(d for d in budgets if d["department"] == "sales")
    assert all(b["reserved_dollars"] == 0 for b in sales["budgets"])  # the hold is settled
    assert Decimal(str(sales["budgets"][0]["spent_dollars"])) == Decimal(
        r.headers["x-meterline-cost-usd"])
    assert metric_value(proxy, "meterline_cache_failures_total", f'stage="{stage}"') == 1


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


def test_a_cut_responses_stream_is_charged_for_the_text_it_relayed(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    """It was read with the chat parser: 0 output tokens."""
    proxy = start_proxy(edits=NO_CACHE_EDITS)
    fault(mock_upstream.url, "cut")
    with httpx.stream("POST", proxy.url + "/v1/responses", headers=SALES, json={
            "model": "gpt-4o-mini", "input": "cut me off", "stream": True}) as r:
        raw = r.read()
    relayed = "".join(e["delta"] for e in sse_data(raw)
                      if e.get("type") == "response.output_text.delta")
    assert relayed and not any(e.get("type") == "response.completed" for e in sse_data(raw))
    record = record_of(proxy, r.headers["x-request-id"])
    assert record["cost_estimated"] is True
    assert record["output_tokens"] == (len(relayed) + 3) // 4 > 0
    assert record["cost_nanos"] == 150 * record["input_tokens"] + 600 * record["output_tokens"]


def test_a_cut_stream_s_prompt_estimate_counts_the_tool_schemas(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    proxy = start_proxy(edits=NO_CACHE_EDITS)
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": "d" * 400,
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
        for i in range(5)]
    fault(mock_upstream.url, "cut")
    request_id, _ = stream_events(proxy, {"model": "gpt-4o-mini", "tools": tools,
                                          "messages": [{"role": "user", "content": "hi"}]})
    record = record_of(proxy, request_id)
    assert record["cost_estimated"] is True
    assert record["input_tokens"] >= len(orjson.dumps(tools)) // 4  # 5 x 400 chars: > 500
