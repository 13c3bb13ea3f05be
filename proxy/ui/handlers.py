"""Routes for the Chat (`/`, `/chat`) and Spend (`/spend`) pages and their static files.

Files are served only from this package directory, by a bare name matching ASSET_NAME with a
known suffix: no sub-paths, so nothing outside the directory (or the Python sources) is reachable.
Assets revalidate with an ETag on every load (`no-cache`), so a deploy is picked up at once
while unchanged files cost a 304.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.errors import NotFound

UI_DIR = Path(__file__).resolve().parent
ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?P<suffix>js|css|svg|html)$")
CONTENT_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "html": "text/html; charset=utf-8",
}
# Pages run only our own modules; model text is never markup, and nothing may frame the page.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def etag_of(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:20] + '"'


async def serve_file(request: Request, name: str) -> Response:
    match = ASSET_NAME.match(name)
    path = UI_DIR / name
    if match is None or path.parent != UI_DIR or not path.is_file():
        raise NotFound(f"Unknown path: {request.url.path}")
    content = await anyio.to_thread.run_sync(path.read_bytes)
    etag = etag_of(content)
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache", "etag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, headers=headers, media_type=CONTENT_TYPES[match["suffix"]])


async def chat_page(request: Request) -> Response:
    return await serve_file(request, "chat.html")


async def spend_page(request: Request) -> Response:
    return await serve_file(request, "spend.html")


async def asset(request: Request) -> Response:
    return await serve_file(request, str(request.path_params["file"]))


def routes() -> list[BaseRoute]:
    return [
        Route("/", chat_page, methods=["GET", "HEAD"]),
        Route("/chat", chat_page, methods=["GET", "HEAD"]),
        Route("/spend", spend_page, methods=["GET", "HEAD"]),
        Route("/ui/{file}", asset, methods=["GET", "HEAD"]),
    ]
