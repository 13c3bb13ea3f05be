"""Reading requests (proxy/gateway/requests.py): bodies, and request ids (the server makes the
record ids, never the client)."""

from __future__ import annotations

import re
import socket
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import ProxyStarter
from tests.gateway.shapes import ENG, NO_CACHE, ask, err
from tests.support.servers import ServerThread


def status_classes(metrics: str, route: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("meterline_requests_total{") and f'route="{route}"' in line:
            cls = line.split('status_class="')[1].split('"')[0]
            out[cls] = out.get(cls, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_client_gone_during_upload_is_not_a_proxy_error(proxy: ServerThread) -> None:
    """A client that hangs up mid-body used to count as a 5xx internal_error (and log a
    traceback), so flaky clients tripped the error-ratio alerts."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer sk-demo-engineering\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                     b'{"model": "gpt-4o-mini", "messages": [')
    deadline = time.monotonic() + 5
    classes: dict[str, float] = {}
    while time.monotonic() < deadline and not classes:
        time.sleep(0.05)
        classes = status_classes(httpx.get(proxy.url + "/metrics").text, "/v1/chat/completions")
    assert classes.get("5xx", 0.0) == 0.0
    assert classes.get("4xx") == 1.0


ADMIN = {"authorization": "Bearer sk-demo-admin"}
SERVER_ID = re.compile(r"^req_[0-9a-f]{32}$")


def chat(url: str, key: str, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return httpx.post(url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}", **(headers or {})})


def test_same_client_request_id_leaves_one_record_per_request(
        start_proxy: ProxyStarter, state: dict[str, Any]) -> None:
    proxy = start_proxy(edits={"cache.yaml": NO_CACHE}, **state)
    costs = Decimal(0)
    server_ids = set()
    for i in range(50):
        r = chat(proxy.url, "sk-demo-sales", f"question {i}", {"x-request-id": "abc"})
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "abc"  # echoed for correlation, as before
        server_ids.add(r.headers["x-meterline-request-id"])
        costs += Decimal(r.headers["x-meterline-cost-usd"])
    assert len(server_ids) == 50 and all(SERVER_ID.match(i) for i in server_ids)
    report = httpx.get(proxy.url + "/admin/spend?department=sales", headers=ADMIN).json()
    assert report["requests"] == 50
    assert Decimal(str(report["total_usd"])).quantize(Decimal("1e-8")) == costs
    records = report["recent"]
    assert {rec["request_id"] for rec in records} <= server_ids
    assert {rec["client_request_id"] for rec in records} == {"abc"}


def test_a_client_cannot_name_another_requests_record(
        start_proxy: ProxyStarter, state: dict[str, Any]) -> None:
    """A department that learns (or guesses) another's id still writes its own record."""
    proxy = start_proxy(edits={"cache.yaml": NO_CACHE}, **state)
    victim = chat(proxy.url, "sk-demo-engineering", "mine")
    rid = victim.headers["x-meterline-request-id"]
    assert victim.headers["x-request-id"] == rid  # no client id: the server's id is echoed
    attacker = chat(proxy.url, "sk-demo-sales", "overwrite", {"x-request-id": rid})
    assert attacker.headers["x-meterline-request-id"] != rid
    report = httpx.get(proxy.url + "/admin/spend", headers=ADMIN).json()
    by_id = {rec["request_id"]: rec for rec in report["recent"]}
    assert by_id[rid]["department"] == "engineering"
    assert report["requests"] == 2


def test_server_ids_are_unguessable(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(edits={"cache.yaml": NO_CACHE})
    ids = [chat(proxy.url, "sk-demo-sales", f"q{i}").headers["x-meterline-request-id"]
           for i in range(3)]
    assert all(SERVER_ID.match(i) for i in ids)
    # no shared prefix beyond 'req_' and no counter: consecutive ids differ in their first bytes
    assert len({i[4:12] for i in ids}) == 3


def test_record_keeps_a_bounded_user(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(edits={"cache.yaml": NO_CACHE})
    body = {"model": "gpt-4o-mini", "messages": ask("hi"), "user": "u" * 100_000}
    assert httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=ENG).status_code == 200
    chat(proxy.url, "sk-demo-sales", "hi", {"x-meterline-user": "h" * 8000})
    report = httpx.get(proxy.url + "/admin/spend", headers=ADMIN).json()
    users = [r["user"] for r in report["recent"]]
    assert sorted(users) == ["h" * 256, "u" * 256]


ABSURD = [
    ({"n": 1_000_000}, "n", "integer_above_max_value",
     "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 1000000 instead."),
    ({"max_tokens": 2**40}, "max_tokens", "integer_above_max_value",
     f"Invalid 'max_tokens': integer above maximum value. Expected a value <= {2**31 - 1}, "
     f"but got {2**40} instead."),
    ({"top_logprobs": 100_000, "logprobs": True}, "top_logprobs", "integer_above_max_value",
     "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, but got "
     "100000 instead."),
    ({"top_logprobs": -1}, "top_logprobs", "integer_below_min_value",
     "Invalid 'top_logprobs': integer below minimum value. Expected a value >= 0, but got -1 "
     "instead."),
    ({"logprobs": "yes"}, "logprobs", "invalid_type",
     "Invalid type for 'logprobs': expected a boolean, got str."),
]


@pytest.mark.parametrize(("extra", "param", "code", "message"), ABSURD)
def test_absurd_counts_are_refused_before_they_reserve(proxy: ServerThread, extra: dict[str, Any],
                                                      param: str, code: str,
                                                      message: str) -> None:
    """Before, n = 10**6 went upstream after reserving the department's whole rate window."""
    body = {"model": "gpt-4o-mini", "messages": ask("hi"), **extra}
    r = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=ENG)
    assert r.status_code == 400
    assert r.json() == err(message, "invalid_request_error", param, code)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/responses", "/v1/chat/completions"])
def test_stream_options_must_be_an_object(proxy: ServerThread, path: str) -> None:
    """Found by the fuzz run: a streamed completion with stream_options "0" was a 500."""
    body = {"model": "gpt-4o-mini", "prompt": "hi", "input": "hi", "messages": ask("hi"),
            "stream": True, "stream_options": "0"}
    r = httpx.post(proxy.url + path, json=body, headers=ENG)
    assert r.status_code == 400
    assert r.json() == err("Invalid type for 'stream_options': expected an object, got str.",
                           "invalid_request_error", "stream_options", "invalid_type")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings", "/v1/responses"])
def test_user_must_be_a_string_on_every_endpoint(proxy: ServerThread, path: str) -> None:
    """Found by the fuzz run: {"user": true} on a passthrough endpoint was a 500 (the record
    clipped it as a string)."""
    body = {"model": "gpt-4o-mini", "prompt": "hi", "input": "hi", "user": True}
    r = httpx.post(proxy.url + path, json=body, headers=ENG)
    assert r.status_code == 400
    assert r.json() == err("Invalid type for 'user': expected a string, got bool.",
                           "invalid_request_error", "user", "invalid_type")


BODIES = [
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 0},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
    {"model": "gpt-4o", "messages": []},
    {"model": "gpt-4o"},
    {"messages": [{"role": "user", "content": "hi"}]},
    {"model": "gpt-4o", "messages": [{"role": "bot", "content": "hi"}]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
]


def test_remembered_validation_equals_validating_each_body_afresh() -> None:
    """validate_chat(body, raw) skips bodies whose bytes passed before: every body, asked in
    any order and again, passes or fails (with the same error) exactly as checked afresh."""
    import random

    import orjson

    from proxy import errors
    from proxy.gateway.requests import validate_chat

    def outcome(body: dict[str, Any], raw: bytes | None) -> str:
        try:
            validate_chat(body, raw)
        except errors.ProxyError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    rng = random.Random(7)
    asked = [rng.choice(BODIES) for _ in range(200)]
    for body in asked:
        raw = orjson.dumps(body)
        assert outcome(orjson.loads(raw), raw) == outcome(orjson.loads(raw), None)
    assert sorted({outcome(b, None) for b in BODIES})[-1] == "ok"  # some pass, some fail
    assert len({outcome(b, None) for b in BODIES}) > 2
