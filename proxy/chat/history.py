"""Conversations of the chat page, stored per owner (the key's user, else the key itself), with
full-text search over their messages. Two backends with one protocol: `MemoryHistory` (embedded
mode) and `RedisHistory` (RediSearch). Retention: a conversation not updated for
`retention_seconds` is gone."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGES = 500
MAX_MESSAGE_CHARS = 200_000
MAX_CONVERSATIONS = 1_000  # per owner; the least recently updated go first
MAX_QUERY_WORDS = 10
SNIPPET_CHARS = 120
CONVERSATION_ID = r"^[A-Za-z0-9_-]{1,64}$"
_WORD = re.compile(r"\w+")


class Message(BaseModel):
    """One chat-page message: what was sent (`content`), what the user typed (`display`), the
    names of attached files, and the answer's badges, as the page shows them."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str = Field(default="", max_length=MAX_MESSAGE_CHARS)
    display: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    attachments: list[str] = Field(default_factory=list, max_length=20)
    model: str | None = Field(default=None, max_length=200)
    meta: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    stopped: bool = False
    suggestions: list[dict[str, Any]] | None = Field(default=None, max_length=8)

    @property
    def text(self) -> str:
        return self.display if self.display is not None else self.content


class ConversationIn(BaseModel):
    """PUT body: the whole conversation (the page sends it after every answer)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=200)
    created: float | None = None
    messages: list[Message] = Field(max_length=MAX_MESSAGES)


@dataclass
class Conversation:
    id: str
    title: str
    created: float
    updated: float
    messages: list[Message]

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "created": self.created,
                "updated": self.updated, "messages": len(self.messages)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(),
                "messages": [m.model_dump(exclude_defaults=True) for m in self.messages]}


@dataclass(frozen=True)
class SearchHit:
    """A conversation with a matching message: where it is and a snippet with the matched
    words as [start, end) ranges into the snippet."""

    conversation_id: str
    title: str
    updated: float
    message_index: int
    role: str
    snippet: str
    highlights: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "title": self.title,
                "updated": self.updated, "message_index": self.message_index, "role": self.role,
                "snippet": self.snippet, "highlights": [list(h) for h in self.highlights]}


class HistoryStore(Protocol):
    async def put(self, owner: str, conversation: Conversation) -> None: ...
    async def get(self, owner: str, conversation_id: str) -> Conversation | None: ...
    async def recent(self, owner: str, limit: int) -> list[Conversation]: ...
    async def delete(self, owner: str, conversation_id: str) -> bool: ...
    async def search(self, owner: str, query: str, limit: int) -> list[SearchHit]: ...
    async def close(self) -> None: ...


def owner_tag(owner: str) -> str:
    """A fixed-length tag for an owner id: safe in Redis keys and RediSearch TAG queries."""
    return hashlib.sha256(owner.encode()).hexdigest()[:24]


def query_words(query: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(query)][:MAX_QUERY_WORDS]


def title_of(messages: list[Message]) -> str:
    first = next((m for m in messages if m.role == "user"), None)
    text = " ".join((first.text if first else "").split())
    if not text:
        return "New conversation"
    return text if len(text) <= 60 else text[:59] + "…"


def snippet_of(text: str, words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """~SNIPPET_CHARS around the first matched word, with every word's occurrences marked."""
    flat = " ".join(text.split())
    lower = flat.lower()
    first = min((at for at in (lower.find(w) for w in words) if at >= 0), default=0)
    start = max(0, first - SNIPPET_CHARS // 3)
    if start:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < first else start
    end = min(len(flat), start + SNIPPET_CHARS)
    prefix, suffix = ("…" if start else ""), ("…" if end < len(flat) else "")
    snippet = prefix + flat[start:end] + suffix
    return snippet, highlights_in(snippet, words)


def highlights_in(snippet: str, words: list[str]) -> list[tuple[int, int]]:
    lower = snippet.lower()
    found: list[tuple[int, int]] = []
    for word in words:
        at = lower.find(word)
        while at >= 0:
            found.append((at, at + len(word)))
            at = lower.find(word, at + len(word))
    merged: list[tuple[int, int]] = []
    for begin, stop in sorted(found):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((begin, stop))
    return merged
