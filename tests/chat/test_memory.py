"""The in-process chat history (proxy/chat/memory.py): retention, the per-owner cap, and its word
search. The contract shared with Redis is in tests/chat/test_history.py."""

from __future__ import annotations

import pytest

from proxy.chat import memory
from proxy.chat.history import Conversation, Message
from proxy.chat.memory import MemoryHistory

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_100.0  # just after the conversations below

    def __call__(self) -> float:
        return self.now


def conv(cid: str, *texts: str, updated: float = 1_700_000_000.0) -> Conversation:
    messages = [Message(role="user" if i % 2 == 0 else "assistant", content=t)
                for i, t in enumerate(texts)]
    return Conversation(cid, f"title {cid}", updated - 1, updated, messages)


async def test_recent_is_newest_first_and_limited() -> None:
    store = MemoryHistory(DAY, Clock())
    for i, updated in enumerate((5.0, 9.0, 1.0)):
        await store.put("ann", conv(f"c{i}", "x", updated=1.7e9 + updated))
    assert [c.id for c in await store.recent("ann", 10)] == ["c1", "c0", "c2"]
    assert [c.id for c in await store.recent("ann", 2)] == ["c1", "c0"]
    assert await store.recent("nobody", 10) == []


async def test_owners_are_separate() -> None:
    store = MemoryHistory(DAY, Clock())
    await store.put("ann", conv("same-id", "ann's"))
    await store.put("bob", conv("same-id", "bob's"))
    got = await store.get("ann", "same-id")
    assert got is not None and got.messages[0].content == "ann's"
    assert await store.delete("bob", "same-id") is True
    assert await store.get("ann", "same-id") is not None
    assert await store.delete("carol", "same-id") is False


async def test_the_least_recently_updated_conversation_goes_past_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_CONVERSATIONS", 3)
    store = MemoryHistory(DAY, Clock())
    await store.put("ann", conv("stale", "x", updated=1.7e9))
    await store.put("ann", conv("b", "x", updated=1.7e9 + 2))
    await store.put("ann", conv("c", "x", updated=1.7e9 + 3))
    await store.put("ann", conv("stale", "x", updated=1.7e9 + 4))  # updated again: now fresh
    await store.put("ann", conv("d", "x", updated=1.7e9 + 5))
    assert sorted(c.id for c in await store.recent("ann", 10)) == ["c", "d", "stale"]


async def test_retention_keeps_a_conversation_until_it_has_passed() -> None:
    clock = Clock()
    store = MemoryHistory(DAY, clock)
    await store.put("ann", conv("a", "x", updated=clock.now))
    clock.now += DAY
    assert await store.get("ann", "a") is not None  # exactly at the cutoff: kept
    clock.now += 0.001
    assert await store.get("ann", "a") is None
    assert await store.recent("ann", 10) == []


async def test_search_needs_every_word_in_one_message() -> None:
    store = MemoryHistory(DAY, Clock())
    await store.put("ann", conv("split", "alpha here", "beta there"))
    await store.put("ann", conv("together", "alpha and beta"))
    hits = await store.search("ann", "Beta, ALPHA!", 10)
    assert [h.conversation_id for h in hits] == ["together"]


async def test_search_matches_parts_of_words_and_reports_the_first_matching_message() -> None:
    store = MemoryHistory(DAY, Clock())
    await store.put("ann", conv("a", "nothing", "budgets reset daily", "more budgets"))
    hits = await store.search("ann", "budg", 10)
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.conversation_id, hit.title, hit.message_index, hit.role) == (
        "a", "title a", 1, "assistant")
    assert [hit.snippet[s:e] for s, e in hit.highlights] == ["budg"]


async def test_search_uses_what_the_user_typed_not_the_attachment_text() -> None:
    store = MemoryHistory(DAY, Clock())
    message = Message(role="user", content="<file>secret contract text</file> summarise",
                      display="summarise this")
    await store.put("ann", Conversation("a", "t", 1.0, 1.7e9, [message]))
    assert await store.search("ann", "contract", 10) == []
    assert [h.conversation_id for h in await store.search("ann", "summarise", 10)] == ["a"]


async def test_search_is_newest_first_and_limited() -> None:
    store = MemoryHistory(DAY, Clock())
    for i in range(5):
        await store.put("ann", conv(f"c{i}", "café crème", updated=1.7e9 + i))
    hits = await store.search("ann", "CAFÉ", 3)
    assert [h.conversation_id for h in hits] == ["c4", "c3", "c2"]


@pytest.mark.parametrize("query", ["", "   ", "?!.,", "—"])
async def test_a_query_without_words_finds_nothing(query: str) -> None:
    store = MemoryHistory(DAY, Clock())
    await store.put("ann", conv("a", "anything ?!., — at all"))
    assert await store.search("ann", query, 10) == []
