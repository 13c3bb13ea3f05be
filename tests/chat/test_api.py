"""History endpoints against a real proxy, on embedded state and on Redis Stack."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread

ENG = {"authorization": "Bearer sk-demo-engineering"}
SALES = {"authorization": "Bearer sk-demo-sales"}
ADMIN = {"authorization": "Bearer sk-demo-admin"}
BASE = "/api/v1/chat"


@pytest.fixture
def proxy(start_proxy: ProxyStarter, state: dict[str, Any]) -> ServerThread:
    return start_proxy(**state)


def call(proxy: ServerThread, method: str, path: str, headers: dict[str, str],
         **kwargs: Any) -> httpx.Response:
    return httpx.request(method, proxy.url + BASE + path, headers=headers, timeout=30, **kwargs)


def body(*texts: str) -> dict[str, Any]:
    return {"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                         for i, t in enumerate(texts)]}


def test_a_user_sees_only_their_own_conversations(proxy: ServerThread) -> None:
    put = call(proxy, "PUT", "/conversations/c-eng-1", ENG,
               json=body("How do budgets for the sales team work?", "They reset daily."))
    assert put.status_code == 200, put.text
    assert put.json()["title"] == "How do budgets for the sales team work?"
    assert put.json()["messages"] == 2
    found = call(proxy, "GET", "/search", ENG, params={"q": "sales TEAM"}).json()
    assert [(h["conversation_id"], h["message_index"]) for h in found["data"]] == [("c-eng-1", 0)]
    hit = found["data"][0]
    assert [hit["snippet"][s:e].lower() for s, e in hit["highlights"]] == ["sales", "team"]
    assert call(proxy, "GET", "/search", SALES, params={"q": "sales team"}).json()["data"] == []
    assert call(proxy, "GET", "/conversations", SALES).json()["data"] == []
    assert call(proxy, "GET", "/conversations/c-eng-1", SALES).status_code == 404
    assert call(proxy, "DELETE", "/conversations/c-eng-1", SALES).status_code == 404
    listed = call(proxy, "GET", "/conversations", ENG).json()["data"]
    assert [c["id"] for c in listed] == ["c-eng-1"]
    full = call(proxy, "GET", "/conversations/c-eng-1", ENG).json()
    assert [m["content"] for m in full["messages"]] == ["How do budgets for the sales team work?",
                                                        "They reset daily."]
    gone = call(proxy, "DELETE", "/conversations/c-eng-1", ENG)
    assert gone.json() == {"id": "c-eng-1", "object": "conversation", "deleted": True}
    assert call(proxy, "GET", "/search", ENG, params={"q": "sales"}).json()["data"] == []


def test_only_an_admin_key_may_act_for_another_user(proxy: ServerThread) -> None:
    refused = call(proxy, "GET", "/conversations", ENG, params={"user": "ann"})
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "message": "This key may only read and write its own history.",
        "type": "permission_error", "param": "user", "code": "user_mismatch"}
    assert call(proxy, "PUT", "/conversations/x1", ADMIN, params={"user": "ann"},
                json=body("ann's kangaroo question")).status_code == 200
    hits = call(proxy, "GET", "/search", ADMIN, params={"user": "ann", "q": "kangaroo"}).json()
    assert [h["conversation_id"] for h in hits["data"]] == ["x1"]
    assert call(proxy, "GET", "/search", ADMIN, params={"q": "kangaroo"}).json()["data"] == []


def _error(message: str, param: str | None, code: str,
           kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "expected"), [
    ("GET", "/search", {}, 400, _error("Invalid 'q': expected 1 to 200 characters.", "q",
                                       "invalid_value")),
    ("GET", "/search", {"params": {"q": "x" * 201}}, 400,
     _error("Invalid 'q': expected 1 to 200 characters.", "q", "invalid_value")),
    ("GET", "/conversations/bad.id", {}, 400,
     _error("Invalid conversation id 'bad.id': expected 1 to 64 letters, digits, '-' or '_'.",
            "id", "invalid_value")),
    ("GET", "/conversations/nope", {}, 404,
     _error("No conversation 'nope'.", "id", "conversation_not_found")),
    ("PUT", "/conversations/c1", {"content": b"{not json"}, 400, None),
    ("PUT", "/conversations/c1", {"json": {"messages": [{"role": "robot"}]}}, 400, None),
    ("PUT", "/conversations/c1", {"json": {"messages": [], "colour": "red"}}, 400,
     _error("Unrecognized request argument supplied: 'colour'.", "colour",
            "unknown_parameter")),
])
def test_bad_input_gets_an_openai_error(proxy: ServerThread, method: str, path: str,
                                        kwargs: dict[str, Any], status: int,
                                        expected: dict[str, Any] | None) -> None:
    resp = call(proxy, method, path, ENG, **kwargs)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if expected is not None:
        assert resp.json() == expected
    else:
        assert error["type"] == "invalid_request_error"
        assert error["code"] in ("invalid_json", "invalid_value")


def test_history_needs_a_key(proxy: ServerThread) -> None:
    resp = call(proxy, "GET", "/conversations", {"authorization": "Bearer sk-nope"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
