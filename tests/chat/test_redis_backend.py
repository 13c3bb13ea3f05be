"""Chat history in Redis Stack (proxy/chat/redis_backend.py): key layout and expiry, the per-owner
cap, search details, FT.SEARCH reply parsing, and failing clearly when Redis is unreachable.
The contract shared with the memory backend is in tests/chat/test_history.py."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.chat import redis_backend
from proxy.chat.history import Conversation, Message, owner_tag
from proxy.chat.redis_backend import (
    MARK_CLOSE,
    MARK_OPEN,
    HistoryUnavailable,
    RedisHistory,
    _documents,
)

pytestmark = pytest.mark.redis
DAY = 86_400.0


def conv(cid: str, *texts: str, updated: float | None = None) -> Conversation:
    messages = [Message(role="user" if i % 2 == 0 else "assistant", content=t)
                for i, t in enumerate(texts)]
    at = time.time() if updated is None else updated
    return Conversation(cid, f"title {cid}", at - 1, at, messages)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url, protocol=2)
    yield redis
    await redis.aclose()


@pytest.fixture
async def store(client: aioredis.Redis, redis_prefix: str) -> RedisHistory:
    history = RedisHistory(client, redis_prefix, 30 * DAY)
    await history.create_index()
    return history


async def keys(client: aioredis.Redis, pattern: str) -> list[str]:
    return sorted([k.decode() async for k in client.scan_iter(match=pattern)])


async def test_create_index_is_idempotent(store: RedisHistory, client: aioredis.Redis,
                                          redis_prefix: str) -> None:
    await store.create_index()
    await RedisHistory(client, redis_prefix, DAY).create_index()
    listed: list[bytes] = await client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
    indexes = [i.decode() for i in listed]
    assert indexes.count(f"{redis_prefix}chat-messages") == 1


async def test_every_key_is_hashed_by_owner_and_expires_with_retention(
        store: RedisHistory, client: aioredis.Redis, redis_prefix: str) -> None:
    began = time.monotonic()
    await store.put("user:ann@example.com", conv("c1", "question", "answer"))
    tag = owner_tag("user:ann@example.com")
    assert await keys(client, f"{redis_prefix}chat:*") == sorted([
        f"{redis_prefix}chat:conv:{tag}:c1", f"{redis_prefix}chat:list:{tag}",
        f"{redis_prefix}chat:msg:{tag}:c1:0", f"{redis_prefix}chat:msg:{tag}:c1:1"])
    for key in await keys(client, f"{redis_prefix}chat:*"):
        ttl = await client.ttl(key)
        # the retention less the time since the put (a loaded machine takes seconds)
        assert 30 * DAY - (time.monotonic() - began) - 2 < ttl <= 30 * DAY, key
    assert "ann" not in "".join(await keys(client, f"{redis_prefix}*"))


async def test_a_shorter_conversation_drops_its_extra_message_keys(
        store: RedisHistory, client: aioredis.Redis, redis_prefix: str) -> None:
    await store.put("ann", conv("c1", "one", "two", "three"))
    await store.put("ann", conv("c1", "uno"))
    assert len(await keys(client, f"{redis_prefix}chat:msg:*")) == 1
    assert await store.delete("ann", "c1") is True
    assert await keys(client, f"{redis_prefix}chat:*") == []


async def test_retention_below_a_second_still_expires(client: aioredis.Redis,
                                                      redis_prefix: str) -> None:
    store = RedisHistory(client, redis_prefix, 0.2)
    await store.put("ann", conv("c1", "x"))
    ttl = await client.ttl(f"{redis_prefix}chat:conv:{owner_tag('ann')}:c1")
    assert ttl in (0, 1)


async def test_the_oldest_conversations_go_past_the_cap(store: RedisHistory,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        client: aioredis.Redis,
                                                        redis_prefix: str) -> None:
    monkeypatch.setattr(redis_backend, "MAX_CONVERSATIONS", 2)
    now = time.time()
    await store.put("ann", conv("old", "aardvark", updated=now - 30))
    await store.put("ann", conv("mid", "aardvark", updated=now - 20))
    await store.put("ann", conv("new", "aardvark", updated=now - 10))
    assert [c.id for c in await store.recent("ann", 10)] == ["new", "mid"]
    assert [h.conversation_id for h in await store.search("ann", "aardvark", 10)] == [
        "new", "mid"]
    assert await keys(client, f"{redis_prefix}chat:*:old*") == []


async def test_search_reports_the_first_matching_message_newest_conversation_first(
        store: RedisHistory) -> None:
    now = time.time()
    await store.put("ann", conv("a", "intro", "the budget resets", "budget again",
                                updated=now - 5))
    await store.put("ann", conv("b", "budget question", updated=now - 1))
    hits = await store.search("ann", "budget", 10)
    assert [(h.conversation_id, h.message_index, h.role) for h in hits] == [
        ("b", 0, "user"), ("a", 1, "assistant")]
    assert hits[1].title == "title a"
    assert [hits[1].snippet[s:e] for s, e in hits[1].highlights] == ["budget"]
    assert MARK_OPEN not in hits[1].snippet and MARK_CLOSE not in hits[1].snippet
    assert [h.conversation_id for h in await store.search("ann", "budget", 1)] == ["b"]


async def test_search_indexes_what_the_user_typed(store: RedisHistory) -> None:
    message = Message(role="user", content="<file>confidential memo</file>",
                      display="please summarise")
    await store.put("ann", Conversation("a", "t", 1.0, time.time(), [message]))
    assert await store.search("ann", "confidential", 10) == []
    assert [h.conversation_id for h in await store.search("ann", "summarise", 10)] == ["a"]


@pytest.mark.parametrize("query", [
    "@owner:{*} secret", "secret | *", "-secret", "secret}) @text:(secret", "*", "",
])
async def test_query_syntax_cannot_widen_the_search_to_other_owners(store: RedisHistory,
                                                                    query: str) -> None:
    await store.put("bob", conv("b1", "bob's secret plan"))
    assert await store.search("ann", query, 10) == []


async def test_words_are_matched_whatever_the_case_and_stopwords(store: RedisHistory) -> None:
    await store.put("ann", conv("a", "To be or not to be: THE Question"))
    hits = await store.search("ann", "the question", 10)
    assert [h.conversation_id for h in hits] == ["a"]


async def test_unreachable_redis_is_a_503_naming_the_history() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))  # fail at once, not after backoffs
    store = RedisHistory(client, "t:unreachable:", DAY)
    try:
        for call in (store.create_index(), store.get("ann", "c"), store.recent("ann", 5),
                     store.put("ann", conv("c", "x")), store.search("ann", "x", 5),
                     store.delete("ann", "c")):
            with pytest.raises(HistoryUnavailable) as info:
                await call
            error = info.value.to_dict()["error"]
            assert info.value.status == 503
            assert error["code"] == "history_unavailable"
            assert error["message"] == "Chat history is unreachable; retry shortly."
    finally:
        await client.aclose()


# -- FT.SEARCH replies -----------------------------------------------------------------------

def test_documents_from_a_resp2_reply() -> None:
    first = [b"conv", b"c1", b"idx", b"0", b"text", "hé".encode()]
    reply: list[Any] = [2, b"p:chat:msg:t:c1:0", first,
                        b"p:chat:msg:t:c2:3", [b"conv", b"c2", b"idx", b"3"]]
    assert _documents(reply) == [{"conv": "c1", "idx": "0", "text": "hé"},
                                 {"conv": "c2", "idx": "3"}]
    assert _documents([0]) == []


def test_documents_from_a_resp3_reply() -> None:
    reply = {b"total_results": 1, b"results": [
        {b"id": b"k", b"extra_attributes": {b"conv": b"c1", b"idx": b"2", "role": "user"}},
        {"id": "k2"}]}
    assert _documents(reply) == [{"conv": "c1", "idx": "2", "role": "user"}, {}]
    assert _documents({"results": []}) == []
    assert _documents({}) == []
