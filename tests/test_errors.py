"""Bad input and upstream faults: every case answers with OpenAI's error shape, exactly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, fault, free_port

ENG = {"authorization": "Bearer sk-demo-engineering"}


def err(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


BAD_INPUT = [
    ("not json", b"{nope", ENG, 400, None),
    ("empty body", b"", ENG, 400, err("Request body is empty; expected a JSON object.",
                                      "invalid_request_error", None, "invalid_json")),
    ("array body", b"[1]", ENG, 400, err("Request body must be a JSON object.",
                                         "invalid_request_error", None, "invalid_json")),
    ("missing model", b'{"messages":[{"role":"user","content":"x"}]}', ENG, 400,
     err("Missing required parameter: 'model'.", "invalid_request_error", "model",
         "missing_required_parameter")),
    ("model not a string", b'{"model":5,"messages":[{"role":"user","content":"x"}]}', ENG, 400,
     err("Invalid type for 'model': expected a non-empty string.", "invalid_request_error",
         "model", "invalid_type")),
    ("missing messages", b'{"model":"gpt-4o"}', ENG, 400,
     err("Missing required parameter: 'messages'.", "invalid_request_error", "messages",
         "missing_required_parameter")),
    ("messages not a list", b'{"model":"gpt-4o","messages":"hi"}', ENG, 400,
     err("Invalid 'messages': expected a non-empty array of messages.", "invalid_request_error",
         "messages", "invalid_type")),
    ("message without role", b'{"model":"gpt-4o","messages":[{"content":"x"}]}', ENG, 400,
     err("Missing required parameter: 'messages[0].role'.", "invalid_request_error",
         "messages[0].role", "missing_required_parameter")),
    ("stream not bool", b'{"model":"gpt-4o","stream":"yes",'
                        b'"messages":[{"role":"user","content":"x"}]}', ENG,
     400, err("Invalid type for 'stream': expected a boolean, got str.",
              "invalid_request_error", "stream", "invalid_type")),
    ("max_tokens bool", b'{"model":"gpt-4o","max_tokens":true,'
                        b'"messages":[{"role":"user","content":"x"}]}',
     ENG, 400, err("Invalid type for 'max_tokens': expected an integer, got bool.",
                   "invalid_request_error", "max_tokens", "invalid_type")),
    ("no key", b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}', {}, 401,
     err("Missing API key: send 'Authorization: Bearer <key>' or 'api-key: <key>'.",
         "authentication_error", None, "invalid_api_key")),
    ("wrong key", b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}',
     {"authorization": "Bearer sk-wrong"}, 401,
     err("Incorrect API key provided.", "authentication_error", None, "invalid_api_key")),
    ("unknown model", b'{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}', ENG, 404,
     err("The model 'gpt-9' does not exist or is not served here.", "invalid_request_error",
         "model", "model_not_found")),
    ("unknown model, department with an allow-list",
     b'{"model":"gpt-9-ultra","messages":[{"role":"user","content":"x"}]}',
     {"authorization": "Bearer sk-demo-sales"}, 404,
     err("The model 'gpt-9-ultra' does not exist or is not served here.",
         "invalid_request_error", "model", "model_not_found")),
    ("model not allowed", b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}',
     {"authorization": "Bearer sk-demo-sales"}, 403,
     err("Department 'sales' may not use model 'gpt-4o'.", "permission_error", "model",
         "model_not_allowed")),
]


@pytest.mark.parametrize("name,body,headers,status,expected", BAD_INPUT,
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_input(proxy: ServerThread, name: str, body: bytes, headers: dict[str, str],
                   status: int, expected: dict[str, Any] | None) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions", content=body,
                   headers={**headers, "content-type": "application/json"})
    assert r.status_code == status
    data = r.json()
    if expected is None:  # parser message text varies; the shape and code do not
        assert set(data["error"]) == {"message", "type", "param", "code"}
        assert data["error"]["type"] == "invalid_request_error"
        assert data["error"]["code"] == "invalid_json"
    else:
        assert data == expected


def test_api_key_header_is_accepted(proxy: ServerThread) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions", headers={"api-key": "sk-demo-engineering"},
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200


def test_unknown_path_and_method(proxy: ServerThread) -> None:
    r = httpx.get(proxy.url + "/v1/nothing-here", headers=ENG)
    assert r.status_code == 404
    assert r.json() == err("Unknown path: /v1/nothing-here", "invalid_request_error", None,
                           "not_found")
    r = httpx.get(proxy.url + "/v1/chat/completions", headers=ENG)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_body_over_limit_is_413(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(max_body_bytes=1000)
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"x" * 2000 + b'"}]}'
    r = httpx.post(proxy.url + "/v1/chat/completions", content=body, headers=ENG)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["code"] == "request_too_large"


def test_upstream_down_is_502(start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = start_proxy(mock_upstream_url=dead + "/v1")
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG, timeout=30,
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "api_error"
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_upstream_timeout_is_504(start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    proxy = start_proxy(timeout_s=0.5)
    fault(mock_upstream.url, "hang", times=10)
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG, timeout=30,
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 504
    assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "timeout",
                                 "param": None, "code": "timeout"}


def test_upstream_400_body_passes_through(proxy: ServerThread,
                                          mock_upstream: ServerThread) -> None:
    fault(mock_upstream.url, "400")
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG,
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Mock fault 400"


def test_upstream_invalid_json_is_502(proxy: ServerThread, mock_upstream: ServerThread) -> None:
    fault(mock_upstream.url, "invalid_json")
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=ENG,
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_upstream_failure_response_keeps_meterline_headers(proxy: ServerThread,
                                                           mock_upstream: ServerThread) -> None:
    fault(mock_upstream.url, "400")
    r = httpx.post(proxy.url + "/v1/chat/completions", headers={**ENG, "x-request-id": "err-1"},
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert r.headers["x-request-id"] == "err-1"
    assert r.headers["x-meterline-department"] == "engineering"
    assert r.headers["x-meterline-route"]
