"""Conversations in the process (embedded mode): a word search over each owner's messages."""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.chat.history import (
    MAX_CONVERSATIONS,
    Conversation,
    SearchHit,
    query_words,
    snippet_of,
)


class MemoryHistory:
    """Every word of the query must occur in one message (case-insensitive, any position)."""

    def __init__(self, retention_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._retention = retention_seconds
        self._clock = clock
        self._by_owner: dict[str, dict[str, Conversation]] = {}

    def _live(self, owner: str) -> dict[str, Conversation]:
        convs = self._by_owner.setdefault(owner, {})
        cutoff = self._clock() - self._retention
        for cid in [cid for cid, c in convs.items() if c.updated < cutoff]:
            del convs[cid]
        return convs

    async def put(self, owner: str, conversation: Conversation) -> None:
        convs = self._live(owner)
        convs[conversation.id] = conversation
        if len(convs) > MAX_CONVERSATIONS:
            del convs[min(convs.values(), key=lambda c: c.updated).id]

    async def get(self, owner: str, conversation_id: str) -> Conversation | None:
        return self._live(owner).get(conversation_id)

    async def recent(self, owner: str, limit: int) -> list[Conversation]:
        convs = sorted(self._live(owner).values(), key=lambda c: c.updated, reverse=True)
        return convs[:limit]

    async def delete(self, owner: str, conversation_id: str) -> bool:
        return self._live(owner).pop(conversation_id, None) is not None

    async def search(self, owner: str, query: str, limit: int) -> list[SearchHit]:
        words = query_words(query)
        hits: list[SearchHit] = []
        if not words:
            return hits
        for conv in await self.recent(owner, MAX_CONVERSATIONS):
            for index, message in enumerate(conv.messages):
                text = message.text.lower()
                if all(w in text for w in words):
                    snippet, marks = snippet_of(message.text, words)
                    hits.append(SearchHit(conv.id, conv.title, conv.updated, index,
                                          message.role, snippet, marks))
                    break
            if len(hits) >= limit:
                break
        return hits

    async def close(self) -> None:
        return None
