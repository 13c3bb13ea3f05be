"""Budget reservations priced from a request's token limits and choice counts (found by running
the proxy as a hostile user would)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, mock_requests

ENG = {"authorization": "Bearer sk-demo-engineering"}
NO_CACHE = "enabled: false\n"


def err(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def below_min(name: str, value: int) -> dict[str, Any]:
    return err(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
               f"but got {value} instead.", "invalid_request_error", name,
               "integer_below_min_value")


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


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
            if q["body"]["messages"][-1]["content"] == text][-1]
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


