"""The app as a whole: what every endpoint's responses carry, whatever their status."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support.servers import REPO_ROOT, ServerThread

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


def test_the_app_imports_no_embedder_runtime_or_pdf_reader_until_used() -> None:
    """Idle RSS (issue 13: <= 120 MB without the local embedder): onnxruntime and tokenizers
    (~35 MB) load with the local embedder, pypdf (~20 MB) with the first attached PDF."""
    lazy = ("onnxruntime", "tokenizers", "pypdf")
    code = ("import sys; import proxy.app, proxy.__main__; "
            f"print(','.join(m for m in {lazy!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == ""
