"""One bounded memo for the request path's per-kind caches (allowed models, targets, routing
candidates, experiment scopes, metric series). Their keys include model names that come from
requests, so each must stay bounded; forgetting everything at the limit (rather than LRU
bookkeeping) keeps a hit to one dict lookup, and a refill costs one recomputation per kind."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """A dict that is cleared when it reaches `limit` entries."""

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> V:
        if len(self._data) >= self.limit:
            self._data.clear()
        self._data[key] = value
        return value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
