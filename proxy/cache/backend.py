"""The storage seam of the cache: one entry type, one protocol, two backends (memory, Redis).

Both backends behave the same: exact lookup by (scope, normalised-text hash), vector KNN inside
one scope, absolute expiry per entry, `max_size` per partition (owner + model) evicting the least
valuable entries first (hits x cost, then oldest), and a few small side tables (counters for
analytics, which entry served which request, per-partition tightened thresholds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from proxy.cache.bookkeeping import Batch

Vector = npt.NDArray[np.float32]


COMPLETE = -1  # Entry.cut_limit of an answer that ended on its own (not finish_reason "length")


@dataclass(slots=True)
class Entry:
    """One cached answer. `response` is a canonical chat.completion JSON body."""

    id: str
    scope: str
    partition: str
    owner: str
    department: str
    model: str
    text: str
    text_hash: str
    response: bytes
    cost: float
    created: float
    expires_at: float
    ttl_seconds: float
    hits: int = 0
    task: str = ""
    completion_tokens: int = 0  # of the stored answer: served only to limits it fits
    cut_limit: int = COMPLETE  # the max_tokens that cut it short (0: none), or COMPLETE

    def value(self) -> tuple[float, float]:
        """Eviction order, lowest first: dollars this entry has saved, then age."""
        return self.hits * self.cost, self.created

    def to_fields(self) -> dict[str, str | bytes | float | int]:
        return asdict(self)

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> Entry:
        def text(value: Any) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        response = data["response"]
        return cls(
            id=text(data["id"]), scope=text(data["scope"]), partition=text(data["partition"]),
            owner=text(data["owner"]), department=text(data["department"]),
            model=text(data["model"]), text=text(data["text"]),
            text_hash=text(data["text_hash"]),
            response=response if isinstance(response, bytes) else str(response).encode(),
            cost=float(data["cost"]), created=float(data["created"]),
            expires_at=float(data["expires_at"]), ttl_seconds=float(data["ttl_seconds"]),
            hits=int(float(data["hits"])), task=text(data.get("task", "")),
            completion_tokens=int(float(data.get("completion_tokens", 0))),
            cut_limit=int(float(data.get("cut_limit", COMPLETE))),
        )

    def fits(self, limit: int | None) -> bool:
        """Whether this answer is what a request with this output limit would get: a complete
        answer when its tokens fit the limit, a cut one only for the limit that cut it."""
        if self.cut_limit != COMPLETE:
            return self.cut_limit == (limit or 0)
        return limit is None or self.completion_tokens <= limit


ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


def least_valuable(entries: Sequence[Entry], keep: int) -> list[Entry]:
    """The entries to evict so that `keep` remain."""
    if len(entries) <= keep:
        return []
    return sorted(entries, key=Entry.value)[: len(entries) - keep]


def eviction_target(max_size: int) -> int:
    """Evict a little below max_size so a full partition does not evict on every insert."""
    return max_size - max_size // 20


@dataclass(frozen=True, slots=True)
class Tightened:
    """A threshold raised by wrong-answer reports, for one partition, until `expires_at`."""

    partition: str
    threshold: float
    expires_at: float
    owner: str
    department: str  # the department whose report raised it last
    model: str

    def as_fields(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in TIGHTENED_FIELDS}

    @classmethod
    def from_fields(cls, data: Mapping[str, str]) -> Tightened:
        return cls(partition=data["partition"], threshold=float(data["threshold"]),
                   expires_at=float(data["expires_at"]), owner=data["owner"],
                   department=data["department"], model=data["model"])


TIGHTENED_FIELDS = ("partition", "threshold", "expires_at", "owner", "department", "model")


class CacheBackend(Protocol):
    """What the cache service needs from storage."""

    async def get_exact(self, scope: str, text_hash: str) -> Entry | None: ...

    async def search(self, scope: str, vector: Vector, k: int) -> list[tuple[Entry, float]]: ...

    async def put(self, entry: Entry, vector: Vector | None, max_size: int) -> int: ...

    async def hit(self, entry: Entry, expires_at: float) -> None: ...

    async def book(self, batch: Batch) -> None:
        """Write a batch of bookkeeping: each tallied entry's hits and new expiry (skipped when
        the entry is gone), the counter increments, the served records."""
        ...

    async def get(self, entry_id: str) -> Entry | None: ...

    async def delete(self, entry_ids: Sequence[str]) -> int: ...

    async def ids_where(self, *, scope: str | None = None, owner: str | None = None) -> list[str]:
        ...

    async def clear(self) -> int: ...

    async def count(self, owner: str | None = None) -> int: ...

    async def top(self, owner: str | None, limit: int) -> list[Entry]: ...

    async def incr(self, counters: Mapping[str, float]) -> None: ...

    async def counters(self) -> dict[str, float]: ...

    async def remember(self, request_id: str, served: Mapping[str, str], ttl_s: float) -> None:
        ...

    async def recall(self, request_id: str) -> dict[str, str] | None: ...

    async def claim_report(self, request_id: str, ttl_s: float) -> bool:
        """True for the first report of a served answer, False for every later one."""
        ...

    async def threshold(self, partition: str) -> float | None: ...

    async def set_threshold(self, tightened: Tightened) -> None: ...

    async def thresholds(self) -> list[Tightened]: ...

    async def clear_thresholds(self) -> int: ...

    async def close(self) -> None: ...
