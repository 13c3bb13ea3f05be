"""One bounded memo for the request path's per-kind caches (allowed models, targets, routing
candidates, experiment scopes, metric series). Their keys include model names that come from
requests, so each must stay bounded; forgetting everything at the limit (rather than LRU
bookkeeping) keeps a hit to one dict lookup, and a refill costs one recomputation per kind."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

import orjson

K = TypeVar("K", bound=Hashable)
# a request body is remembered by its JSON up to this size (the cache key, the route): a hit's
# body comes back byte for byte, and a memo of 256 such bodies stays within about 1 MB
MEMO_BODY_BYTES = 4096
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


def body_shape(body: Mapping[str, Any], raw_size: int) -> bytes | None:
    """The body's JSON to remember a result computed from it by, or None when it is too large
    (`raw_size`, its size as received, is checked before encoding) or cannot be encoded."""
    if raw_size > MEMO_BODY_BYTES:
        return None
    try:
        shape = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return shape if len(shape) <= MEMO_BODY_BYTES else None
