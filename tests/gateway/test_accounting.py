"""What a call costs, as the client, the stream's last event and the usage record say it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, fault, providers_with_models

ADMIN = {"authorization": "Bearer sk-demo-admin"}
SALES = {"authorization": "Bearer sk-demo-sales"}
NO_CACHE = {"cache.yaml": "enabled: false\n"}
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
    proxy = start_proxy(edits=NO_CACHE, **state)
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
    proxy = start_proxy(edits=NO_CACHE)
    r = httpx.post(proxy.url + "/v1/embeddings", headers=SALES,
                   json={"model": "text-embedding-3-small", "input": "y" * 40})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 10
    assert Decimal(r.headers["x-meterline-cost-usd"]) == Decimal("0.0000002")
    assert record_of(proxy, r.headers["x-request-id"])["cost_nanos"] == 200


def test_a_model_without_a_price_is_billed_at_the_default_and_flagged(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    """gpt-4o-audio-preview was billed as gpt-4o (a '-suffix' counted as a snapshot), priced."""
    proxy = start_proxy(edits={**NO_CACHE, **providers_with_models(
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
    proxy = start_proxy(edits=NO_CACHE)
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
    proxy = start_proxy(edits=NO_CACHE)
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
