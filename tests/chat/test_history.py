"""History stores, each test on both backends (memory; Redis Stack with RediSearch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from proxy.chat.history import Conversation, HistoryStore, Message, owner_tag, snippet_of
from proxy.chat.memory import MemoryHistory
from proxy.chat.redis_backend import RedisHistory

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-resp2", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[HistoryStore]:
    if request.param == "memory":
        yield MemoryHistory(30 * DAY, clock)
        return
    protocol = 2 if request.param == "redis-resp2" else 3  # FT.SEARCH replies differ
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"), protocol=protocol)
    redis_store = RedisHistory(client, request.getfixturevalue("redis_prefix"), 30 * DAY, clock)
    await redis_store.create_index()
    yield redis_store
    await client.aclose()


def conv(cid: str, *texts: str, updated: float = 1_700_000_000.0) -> Conversation:
    messages = [Message(role="user" if i % 2 == 0 else "assistant", content=t)
                for i, t in enumerate(texts)]
    return Conversation(cid, texts[0][:30], updated - 10, updated, messages)


async def test_put_get_list_delete(store: HistoryStore) -> None:
    await store.put("user:ann", conv("a1", "first question", "first answer", updated=1.7e9))
    await store.put("user:ann", conv("a2", "second question", updated=1.7e9 + 5))
    got = await store.get("user:ann", "a1")
    assert got is not None and [m.content for m in got.messages] == ["first question",
                                                                     "first answer"]
    assert [c.id for c in await store.recent("user:ann", 10)] == ["a2", "a1"]
    assert await store.delete("user:ann", "a1") is True
    assert await store.delete("user:ann", "a1") is False
    assert await store.get("user:ann", "a1") is None
    assert [c.id for c in await store.recent("user:ann", 10)] == ["a2"]


async def test_search_finds_only_the_owners_messages_with_highlights(store: HistoryStore) -> None:
    await store.put("user:ann", conv("a1", "How do budgets for the sales team work?",
                                     "Budgets reset every day at midnight UTC."))
    await store.put("user:ann", conv("a2", "Unrelated question about pelicans"))
    await store.put("user:bob", conv("b1", "Sales team budgets for bob only"))
    hits = await store.search("user:ann", "SALES team", 10)
    assert [(h.conversation_id, h.message_index) for h in hits] == [("a1", 0)]
    hit = hits[0]
    assert [hit.snippet[s:e].lower() for s, e in hit.highlights] == ["sales", "team"]
    answer = await store.search("user:ann", "midnight", 10)
    assert [(h.conversation_id, h.message_index, h.role) for h in answer] == [
        ("a1", 1, "assistant")]
    assert await store.search("user:ann", "pelicans sales", 10) == []
    assert await store.search("user:carol", "sales", 10) == []
    assert [h.conversation_id for h in await store.search("user:bob", "sales", 10)] == ["b1"]


async def test_replacing_a_conversation_drops_its_old_messages_from_search(
        store: HistoryStore) -> None:
    await store.put("user:ann", conv("a1", "kangaroo facts", "kangaroos hop"))
    await store.put("user:ann", conv("a1", "wombat facts"))
    assert await store.search("user:ann", "kangaroo", 10) == []
    assert [h.conversation_id for h in await store.search("user:ann", "wombat", 10)] == ["a1"]
    await store.delete("user:ann", "a1")
    assert await store.search("user:ann", "wombat", 10) == []


async def test_conversations_past_retention_are_gone(store: HistoryStore, clock: Clock,
                                                     request: pytest.FixtureRequest) -> None:
    await store.put("user:ann", conv("old", "ancient topic", updated=clock.now))
    clock.now += 31 * DAY
    await store.put("user:ann", conv("new", "fresh topic", updated=clock.now))
    ids = [c.id for c in await store.recent("user:ann", 10)]
    assert "new" in ids
    if isinstance(store, RedisHistory):  # Redis expires keys on its own clock: check the TTL
        ttl: Any = await store._r.ttl(store._conv_key(owner_tag("user:ann"), "new"))
        assert 29 * DAY < ttl <= 30 * DAY
        assert ids == ["new"]  # the list drops ids older than the retention by score
    else:
        assert ids == ["new"]
        assert await store.get("user:ann", "old") is None


def test_snippet_is_cut_around_the_first_match() -> None:
    text = "word " * 60 + "the needle is here " + "tail " * 60
    snippet, marks = snippet_of(text, ["needle"])
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= 122
    assert [snippet[s:e] for s, e in marks] == ["needle"]


@pytest.mark.redis
async def test_index_is_created_on_first_use(redis_url: str, redis_prefix: str) -> None:
    """If Redis was unreachable at start, the first write creates the search index."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        late = RedisHistory(client, redis_prefix, 30 * DAY)
        await late.put("user:ann", conv("a1", "platypus question"))
        assert [h.conversation_id for h in await late.search("user:ann", "platypus", 5)] == ["a1"]
    finally:
        await client.aclose()
