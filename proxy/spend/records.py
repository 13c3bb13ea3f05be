"""The per-request usage record that spend, chargeback, experiments and forecasts read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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
    cost: float = 0.0  # dollars actually charged (0 for cache hits)
    cost_estimated: bool = False  # usage missing (cut stream): tokens estimated from relayed text
    saved: float = 0.0  # dollars a cache hit saved (price of the original answer)
    cache: CacheStatus = "off"
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
