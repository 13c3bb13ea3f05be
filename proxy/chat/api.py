"""HTTP endpoints for the chat page's history. Every call is scoped to the caller: the key's user
(`user` on the key), else the key itself; an admin key may act for a user with ?user=.

    GET    /api/v1/chat/conversations?limit=50     the caller's conversations, newest first
    GET    /api/v1/chat/conversations/{id}         one conversation with its messages
    PUT    /api/v1/chat/conversations/{id}         create or replace it
    DELETE /api/v1/chat/conversations/{id}         delete it
    GET    /api/v1/chat/search?q=&limit=20         full-text search with highlighted snippets
    POST   /api/v1/chat/suggestions                actions for an answer (proxy.chat.suggestions)
    POST   /api/v1/chat/extract                    a PDF's text with page markers (body: the file)
"""

from __future__ import annotations

import re
import time

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.chat.documents import MAX_PDF_BYTES, pdf_text
from proxy.chat.history import (
    CONVERSATION_ID,
    Conversation,
    ConversationIn,
    HistoryStore,
    title_of,
)
from proxy.chat.suggestions import Context, SuggestionRequest, suggest_actions
from proxy.errors import InvalidRequest, NotFound, PermissionDenied, ServiceUnavailable
from proxy.gateway.requests import authenticate, read_body, request_id_of
from proxy.http import json_body, json_response, number_param, parse_body
from proxy.runtime.services import Services

MAX_CONVERSATION_BYTES = 4 * 1024 * 1024
MAX_SUGGESTION_BYTES = 1024 * 1024
MAX_QUERY_CHARS = 200
_ID = re.compile(CONVERSATION_ID)


async def caller(request: Request) -> tuple[HistoryStore, str]:
    """The history store and the owner id every operation of this request is scoped to."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    if services.chat is None:
        raise ServiceUnavailable("Chat history is not running.", code="history_disabled")
    store: HistoryStore = services.chat
    asked = request.query_params.get("user") or None
    if asked is None or asked == principal.user:
        owner = f"user:{principal.user}" if principal.user else f"key:{principal.key_id}"
    elif principal.admin:
        owner = f"user:{asked}"
    else:
        raise PermissionDenied("This key may only read and write its own history.",
                               param="user", code="user_mismatch")
    return store, owner


def conversation_id(request: Request) -> str:
    cid = str(request.path_params["id"])
    if not _ID.match(cid):
        raise InvalidRequest(f"Invalid conversation id '{cid[:80]}': expected 1 to 64 letters, "
                             "digits, '-' or '_'.", param="id", code="invalid_value")
    return cid


async def list_conversations(request: Request) -> Response:
    store, owner = await caller(request)
    limit = int(number_param(request.query_params, "limit", 50, 1, 200))
    found = await store.recent(owner, limit)
    return json_response({"object": "list", "data": [c.summary() for c in found]})


async def get_conversation(request: Request) -> Response:
    store, owner = await caller(request)
    cid = conversation_id(request)
    found = await store.get(owner, cid)
    if found is None:
        raise NotFound(f"No conversation '{cid}'.", param="id", code="conversation_not_found")
    return json_response(found.to_dict())


async def put_conversation(request: Request) -> Response:
    store, owner = await caller(request)
    cid = conversation_id(request)
    body = parse_body(ConversationIn, await json_body(request, MAX_CONVERSATION_BYTES))
    now = time.time()
    old = await store.get(owner, cid)
    created = old.created if old else (body.created or now)
    conv = Conversation(cid, body.title.strip() or title_of(body.messages), created, now,
                        body.messages)
    await store.put(owner, conv)
    return json_response(conv.summary())


async def delete_conversation(request: Request) -> Response:
    store, owner = await caller(request)
    cid = conversation_id(request)
    if not await store.delete(owner, cid):
        raise NotFound(f"No conversation '{cid}'.", param="id", code="conversation_not_found")
    return json_response({"id": cid, "object": "conversation", "deleted": True})


async def search(request: Request) -> Response:
    store, owner = await caller(request)
    query = (request.query_params.get("q") or "").strip()
    if not query or len(query) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"Invalid 'q': expected 1 to {MAX_QUERY_CHARS} characters.",
                             param="q", code="invalid_value")
    limit = int(number_param(request.query_params, "limit", 20, 1, 100))
    hits = await store.search(owner, query, limit)
    return json_response({"object": "list", "query": query,
                          "data": [hit.to_dict() for hit in hits]})


async def suggestions(request: Request) -> Response:
    """Needs only a valid key (no history): the rules read the caller's department."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    body = parse_body(SuggestionRequest, await json_body(request, MAX_SUGGESTION_BYTES))
    grafana = services.settings.env.get("MET_GRAFANA_URL") or None
    ctx = Context(None if principal.admin else principal.department, principal.admin, grafana)
    return json_response({"actions": suggest_actions(body, ctx)})


async def extract(request: Request) -> Response:
    """The PDF in the body as text; parsed in a worker thread, kept nowhere."""
    services: Services = request.app.state.services
    request_id_of(request)
    await authenticate(request, services)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/pdf":
        raise InvalidRequest(f"Invalid content type '{kind[:80]}': send the PDF as "
                             "application/pdf.", param="file", code="unsupported_file_type")
    data = await read_body(request, MAX_PDF_BYTES)
    return json_response(await anyio.to_thread.run_sync(pdf_text, data))


def routes() -> list[BaseRoute]:
    item = "/api/v1/chat/conversations/{id}"
    return [
        Route("/api/v1/chat/conversations", list_conversations, methods=["GET"]),
        Route(item, get_conversation, methods=["GET"]),
        Route(item, put_conversation, methods=["PUT"]),
        Route(item, delete_conversation, methods=["DELETE"]),
        Route("/api/v1/chat/search", search, methods=["GET"]),
        Route("/api/v1/chat/suggestions", suggestions, methods=["POST"]),
        Route("/api/v1/chat/extract", extract, methods=["POST"]),
    ]
