"""The app as a whole: what every endpoint's responses carry, whatever their status."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import ServerThread

ADMIN = {"authorization": "Bearer sk-demo-admin"}
SALES = {"authorization": "Bearer sk-demo-sales"}

# (method, path, headers, status): one line per endpoint family and status class
EVERY_ENDPOINT = [
    ("GET", "/v1/models", SALES, 200),
    ("GET", "/v1/models", {}, 401),
    ("GET", "/v1/spend", SALES, 200),
    ("GET", "/v1/spend", {"authorization": "Bearer sk-wrong"}, 401),
    ("GET", "/v1/forecast", SALES, 200),
    ("GET", "/v1/cache/analytics", SALES, 200),
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/admin/keys", ADMIN, 200),
    ("GET", "/admin/keys", SALES, 403),
    ("GET", "/admin/spend", ADMIN, 200),
    ("GET", "/admin/budgets", ADMIN, 200),
    ("GET", "/admin/experiments", ADMIN, 200),
    ("GET", "/admin/forecast", ADMIN, 200),
    ("GET", "/admin/alerts", ADMIN, 200),
    ("GET", "/", {}, 200),
    ("GET", "/spend", {}, 200),
    ("GET", "/no/such/path", {}, 404),
    ("GET", "/v1/chat/completions", SALES, 405),
    ("POST", "/v1/chat/completions", SALES, 400),
]


@pytest.mark.parametrize("method,path,headers,status", EVERY_ENDPOINT,
                         ids=[f"{m} {p} {s}" for m, p, _, s in EVERY_ENDPOINT])
def test_every_response_carries_a_request_id(proxy: ServerThread, method: str, path: str,
                                             headers: dict[str, str], status: int) -> None:
    r = httpx.request(method, proxy.url + path, headers=headers, content=b"{}")
    assert r.status_code == status
    assert r.headers["x-request-id"].startswith("req_")
    kept = httpx.request(method, proxy.url + path, content=b"{}",
                         headers={**headers, "x-request-id": "client-chosen-7"})
    assert kept.headers["x-request-id"] == "client-chosen-7"
