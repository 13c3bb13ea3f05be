"""The per-request usage record that spend, chargeback, experiments and forecasts read."""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import orjson

from proxy.spend.pricing import nanos_to_dollars, to_nanos

CacheStatus = Literal["hit-exact", "hit-semantic", "miss", "bypass", "shadow", "off"]


@dataclass(slots=True)
class UsageRecord:
    """One proxied request, written once when the response has finished (or was cut)."""

    request_id: str  # made by the server (proxy.gateway.requests.new_request_id): the record key
    ts: float  # unix seconds when the request arrived
    department: str
    key_id: str  # id of the inbound key (never the key itself)
    user: str | None
    endpoint: str  # "chat.completions" | "completions" | "embeddings" | "responses"
    model_requested: str
    model_used: str
    provider: str
    status: int  # HTTP status sent to the client (200 even if a stream was cut later)
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0  # nano-dollars actually charged (0 for cache hits)
    # the cost is an estimate: usage missing (cut stream: tokens estimated from relayed text) or
    # the model has no price (`priced` False: billed at the default price)
    cost_estimated: bool = False
    saved_nanos: int = 0  # nano-dollars a cache hit saved (price of the original answer)
    cache: CacheStatus = "off"
    priced: bool = True  # False: the model is not in the price table (default price charged)
    route_rule: str | None = None
    task: str | None = None
    experiment: str | None = None
    variant: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    error: str | None = None  # error code when the request failed or the stream was cut
    quality_score: float | None = None  # set later by POST /v1/feedback
    client_request_id: str | None = None  # the caller's x-request-id, never a key
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cost(self) -> float:
        """Dollars charged (for display and statistics; sums use `cost_nanos`)."""
        return nanos_to_dollars(self.cost_nanos)

    @cost.setter
    def cost(self, dollars: float) -> None:
        self.cost_nanos = to_nanos(dollars)

    @property
    def failed(self) -> bool:
        """The request failed or its stream was cut (statistics count it as an error)."""
        return self.status >= 400 or self.error is not None

    @property
    def saved(self) -> float:
        return nanos_to_dollars(self.saved_nanos)

    @saved.setter
    def saved(self, dollars: float) -> None:
        self.saved_nanos = to_nanos(dollars)

    def to_dict(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict deep-copies every value and cost a replica writing
        # records in batches 6 % of its CPU; `extra` is the one container and is copied
        data = {name: getattr(self, name) for name in _FIELDS}
        data["extra"] = dict(self.extra)
        data["cost"], data["saved"] = self.cost, self.saved
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        """Also reads records written before costs were nano-dollars (dollars in `cost` and
        `saved`, computed in whole micro-dollars: converted exactly)."""
        known = cls.__dataclass_fields__
        fields = {k: v for k, v in data.items() if k in known}
        for name in ("cost", "saved"):
            if f"{name}_nanos" not in fields and isinstance(data.get(name), int | float):
                fields[f"{name}_nanos"] = to_nanos(data[name])
        return cls(**fields)

    def packed(self) -> bytes:
        """The record as one bytes object, for stores that keep many records in process: its
        `ts` (read by `packed_ts` without decoding) and an orjson array of every field but the
        request id (the store's key). ~240 bytes where the record object with its own strings,
        floats and `extra` dict takes ~700 (scripts/record_memory.py)."""
        return _TS.pack(self.ts) + orjson.dumps(_packed_fields(self))

    @classmethod
    def unpacked(cls, request_id: str, packed: bytes) -> UsageRecord:
        """A new record (its own `extra`) from `packed()`."""
        return cls(request_id, *orjson.loads(memoryview(packed)[_TS.size:]))


def packed_ts(packed: bytes) -> float:
    ts: float = _TS.unpack_from(packed)[0]
    return ts


_FIELDS = tuple(f.name for f in fields(UsageRecord))
_PACKED = _FIELDS[1:]  # after request_id, in the constructor's order
_packed_fields = operator.attrgetter(*_PACKED)  # their values as a tuple, read in C
_TS = struct.Struct("<d")
