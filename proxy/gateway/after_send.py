"""A whole response body whose bookkeeping runs once it has been sent: the answer from upstream
(spend settled, usage recorded) and a cached answer (spend released, hit counted) alike."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)


# header name -> its lower-case bytes: the proxy's own names come back on every response
_NAMES: dict[str, bytes] = {}
_MAX_NAMES = 512  # an upstream's names are remembered too, up to this many


def _name(name: str) -> bytes:
    encoded = name.lower().encode("latin-1")
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[name] = encoded
    return encoded


class AfterSendResponse(Response):
    """`after` runs once the body is sent, or failed to be sent (the client left), in the same
    task, so a graceful shutdown still waits for it; its failure is logged, never a second
    response. `what` names the request in that log line."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str], media_type: str,
                 after: Callable[[], Awaitable[None]], what: str) -> None:
        # Response.__init__ without its generality (render, header scans, charset): the body is
        # bytes and the proxy's own header names are lower case; a name from elsewhere (an
        # upstream's) is lowered, and content-length/-type given in `headers` win, as there
        self.status_code = status
        self.media_type = media_type
        self.background = None
        self.body = body
        raw = [(_NAMES.get(k) or _name(k), v.encode("latin-1")) for k, v in headers.items()]
        names = {name for name, _ in raw}
        if b"content-length" not in names and 200 <= status and status not in (204, 304):
            raw.append((b"content-length", b"%d" % len(body)))
        if b"content-type" not in names:
            if media_type.startswith("text/") and "charset=" not in media_type.lower():
                media_type += "; charset=utf-8"
            raw.append((b"content-type", media_type.encode("latin-1")))
        self.raw_headers = raw
        self.after = after
        self.what = what

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            try:
                await self.after()
            except Exception:  # the client has its answer: log, never a second response
                log.exception("bookkeeping failed after %s", self.what)
