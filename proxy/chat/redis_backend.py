"""Conversations in Redis, searched with RediSearch: shared by every replica.

    {p}chat:conv:{owner}:{id}        the conversation as JSON
    {p}chat:list:{owner}             sorted set: id -> updated
    {p}chat:msg:{owner}:{id}:{n}     hash per message: owner, conv, idx, role, text (indexed)
    index {p}chat-messages           ON HASH PREFIX {p}chat:msg: (owner TAG, text TEXT, ...)

`owner` is owner_tag(owner id), so a search is filtered on a TAG the caller can't widen. Every key
expires `retention_seconds` after the conversation's last update.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.chat.history import (
    MAX_CONVERSATIONS,
    Conversation,
    Message,
    SearchHit,
    owner_tag,
    query_words,
    snippet_of,
)
from proxy.errors import ServiceUnavailable

log = logging.getLogger(__name__)
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"
_MARKED = re.compile(f"{MARK_OPEN}(.*?){MARK_CLOSE}", re.S)
SEARCH_PAGE = 100


class HistoryUnavailable(ServiceUnavailable):
    code = "history_unavailable"


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.warning("chat history unreachable: %s", exc)
        raise HistoryUnavailable("Chat history is unreachable; retry shortly.") from exc


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHistory:
    def __init__(self, client: aioredis.Redis, prefix: str, retention_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._r = client
        self._p = prefix
        self._ttl = max(1, int(retention_seconds))
        self._clock = clock
        self.index = f"{prefix}chat-messages"
        self._indexed = False

    async def create_index(self) -> None:
        """Idempotent; STOPWORDS 0 so any word a user typed can be found. Called at start and,
        if Redis was unreachable then, again before the first write or search."""
        with _reachable(), contextlib.suppress(ResponseError):  # "Index already exists"
            await self._command(
                "FT.CREATE", self.index, "ON", "HASH", "PREFIX", "1", f"{self._p}chat:msg:",
                "STOPWORDS", "0", "SCHEMA", "owner", "TAG", "conv", "TAG", "idx", "NUMERIC",
                "role", "TAG", "text", "TEXT")
        self._indexed = True

    async def _ensure_index(self) -> None:
        if not self._indexed:
            await self.create_index()

    async def _command(self, *args: str) -> Any:
        """FT.* as raw commands: the same replies on every redis-py version we support."""
        return await self._r.execute_command(*args)  # type: ignore[no-untyped-call]

    def _conv_key(self, tag: str, cid: str) -> str:
        return f"{self._p}chat:conv:{tag}:{cid}"

    def _list_key(self, tag: str) -> str:
        return f"{self._p}chat:list:{tag}"

    def _msg_key(self, tag: str, cid: str, index: int) -> str:
        return f"{self._p}chat:msg:{tag}:{cid}:{index}"

    async def put(self, owner: str, conversation: Conversation) -> None:
        await self._ensure_index()
        tag, cid = owner_tag(owner), conversation.id
        with _reachable():
            old = await self._r.get(self._conv_key(tag, cid))
            old_count = len(orjson.loads(old)["messages"]) if old else 0
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._conv_key(tag, cid), orjson.dumps(conversation.to_dict()), ex=self._ttl)
            for index, message in enumerate(conversation.messages):
                key = self._msg_key(tag, cid, index)
                pipe.hset(key, mapping={"owner": tag, "conv": cid, "idx": index,
                                        "role": message.role, "text": message.text})
                pipe.expire(key, self._ttl)
            for index in range(len(conversation.messages), old_count):
                pipe.delete(self._msg_key(tag, cid, index))
            pipe.zadd(self._list_key(tag), {cid: conversation.updated})
            pipe.expire(self._list_key(tag), self._ttl)
            await pipe.execute()
            extra = await self._r.zcard(self._list_key(tag)) - MAX_CONVERSATIONS
            if extra > 0:
                for oldest in await self._r.zrange(self._list_key(tag), 0, extra - 1):
                    await self.delete(owner, _str(oldest))

    async def get(self, owner: str, conversation_id: str) -> Conversation | None:
        with _reachable():
            blob = await self._r.get(self._conv_key(owner_tag(owner), conversation_id))
        return _conversation(orjson.loads(blob)) if blob else None

    async def recent(self, owner: str, limit: int) -> list[Conversation]:
        tag = owner_tag(owner)
        with _reachable():
            await self._r.zremrangebyscore(self._list_key(tag), "-inf",
                                           self._clock() - self._ttl)
            ids = [_str(i) for i in await self._r.zrevrange(self._list_key(tag), 0, limit - 1)]
            blobs = await self._r.mget([self._conv_key(tag, i) for i in ids]) if ids else []
        return [_conversation(orjson.loads(b)) for b in blobs if b]

    async def delete(self, owner: str, conversation_id: str) -> bool:
        tag = owner_tag(owner)
        with _reachable():
            blob = await self._r.get(self._conv_key(tag, conversation_id))
            count = len(orjson.loads(blob)["messages"]) if blob else 0
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._conv_key(tag, conversation_id))
            for index in range(count):
                pipe.delete(self._msg_key(tag, conversation_id, index))
            pipe.zrem(self._list_key(tag), conversation_id)
            await pipe.execute()
        return blob is not None

    async def search(self, owner: str, query: str, limit: int) -> list[SearchHit]:
        words = query_words(query)
        if not words:
            return []
        await self._ensure_index()
        tag = owner_tag(owner)
        expr = f"@owner:{{{tag}}} @text:({' '.join(words)})"
        with _reachable():
            reply = await self._command(
                "FT.SEARCH", self.index, expr, "RETURN", "4", "conv", "idx", "role", "text",
                "HIGHLIGHT", "FIELDS", "1", "text", "TAGS", MARK_OPEN, MARK_CLOSE,
                "LIMIT", "0", str(SEARCH_PAGE), "DIALECT", "2")
        first: dict[str, tuple[int, str, str]] = {}
        for fields in _documents(reply):
            cid, index = fields["conv"], int(fields["idx"])
            if cid not in first or index < first[cid][0]:
                first[cid] = (index, fields["role"], fields["text"])
        return await self._hits(owner, first, words, limit)

    async def _hits(self, owner: str, first: dict[str, tuple[int, str, str]], words: list[str],
                    limit: int) -> list[SearchHit]:
        hits = []
        for cid, (index, role, marked) in first.items():
            conv = await self.get(owner, cid)
            if conv is None:
                continue
            matched = sorted({m.lower() for m in _MARKED.findall(marked)}, key=len, reverse=True)
            text = marked.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
            snippet, marks = snippet_of(text, matched or words)
            hits.append(SearchHit(cid, conv.title, conv.updated, index, role, snippet, marks))
        hits.sort(key=lambda h: h.updated, reverse=True)
        return hits[:limit]

    async def close(self) -> None:
        return None  # the client belongs to Services


def _documents(reply: Any) -> list[dict[str, str]]:
    """FT.SEARCH's documents as field dicts, from a RESP2 list or a RESP3 map."""
    if isinstance(reply, dict):  # RESP3 (redis-py's default); keys may be bytes
        found = {_str(k): v for k, v in reply.items()}.get("results") or []
        docs = [{_str(k): v for k, v in doc.items()} for doc in found]
        return [{_str(k): _str(v) for k, v in (doc.get("extra_attributes") or {}).items()}
                for doc in docs]
    docs = []
    for fields in reply[2::2]:
        docs.append({_str(fields[i]): _str(fields[i + 1]) for i in range(0, len(fields), 2)})
    return docs


def _conversation(data: dict[str, Any]) -> Conversation:
    return Conversation(data["id"], data["title"], data["created"], data["updated"],
                        [Message.model_validate(m) for m in data["messages"]])
