"""Serving the pages' static files (proxy/ui/handlers.py) in-process, on only its own routes:
names, headers, ETag revalidation. Traversal over real HTTP is in tests/ui/test_pages.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from proxy.errors import ProxyError, handle_proxy_error
from proxy.ui.handlers import ASSET_NAME, CSP, UI_DIR, etag_of, routes


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=routes(), exception_handlers={ProxyError: handle_proxy_error})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://ui.test") as http:
        yield http


def test_etag_is_a_quoted_content_hash() -> None:
    assert etag_of(b"a") == etag_of(b"a") != etag_of(b"b")
    assert etag_of(b"").startswith('"') and etag_of(b"").endswith('"')
    assert len(etag_of(b"x")) == 22


@pytest.mark.parametrize(("name", "ok"), [
    ("chat.js", True), ("style.css", True), ("icon.svg", True), ("spend.html", True),
    ("a-b_c.js", True), ("9.js", True),
    ("handlers.py", False), ("Chat.js", False), ("chat.JS", False), (".chat.js", False),
    ("-x.js", False), ("chat.js.map", False), ("dir/chat.js", False), ("chat.json", False),
    ("", False),
])
def test_asset_names(name: str, ok: bool) -> None:
    assert (ASSET_NAME.match(name) is not None) is ok


async def test_pages_and_assets_carry_the_security_headers(client: httpx.AsyncClient) -> None:
    for path, name in (("/", "chat.html"), ("/chat", "chat.html"), ("/spend", "spend.html"),
                       ("/ui/spend.js", "spend.js")):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.content == (UI_DIR / name).read_bytes()
        assert response.headers["etag"] == etag_of(response.content)
        assert response.headers["content-security-policy"] == CSP
        assert "frame-ancestors 'none'" in CSP
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_a_matching_etag_among_several_is_a_304_with_the_same_headers(
        client: httpx.AsyncClient) -> None:
    etag = (await client.get("/ui/style.css")).headers["etag"]
    again = await client.get("/ui/style.css", headers={"if-none-match": f'"old", {etag}'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["content-security-policy"] == CSP
    stale = await client.get("/ui/style.css", headers={"if-none-match": '"old"'})
    assert stale.status_code == 200


async def test_head_answers_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/spend")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize("path", ["/ui/missing.js", "/ui/handlers.py", "/ui/Chat.js",
                                  "/ui/__init__.py", "/ui/chat.js.map", "/ui/chat.js%0A"])
async def test_unknown_files_are_an_openai_shaped_404(client: httpx.AsyncClient,
                                                      path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error", None, "not_found")
    assert error["message"] == f"Unknown path: {path}".replace("%0A", "")


async def test_only_get_and_head(client: httpx.AsyncClient) -> None:
    assert (await client.post("/ui/chat.js")).status_code == 405
