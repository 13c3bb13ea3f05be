"""What one request's cache lookup carries: the hit it found, the flight it leads or waits for,
and the state kept on the call until its answer is stored (proxy/cache/semantic_cache.py)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.cache.backend import Entry, Vector
from proxy.cache.cache_key import Controls, Key
from proxy.cache.config import Effective
from proxy.cache.matching.match import Tokens


def grown_ttl(ttl_s: float, growth: float, hits: int, cap_s: float) -> float:
    """ttl * growth**hits, or `cap_s` once that reaches it: the power is only taken while it is
    below the cap, so it never overflows however many hits an entry has (10,000 hits of one
    popular entry overflowed a float at growth 1.5 and turned every later hit into a 500)."""
    if growth <= 1.0 or ttl_s >= cap_s:
        return ttl_s
    if hits >= math.log(cap_s / ttl_s) / math.log(growth):
        return cap_s
    return ttl_s * growth ** hits


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    kind: Literal["exact", "semantic"]
    similarity: float
    coalesced: bool = False  # waited for an identical request that was in flight
    judged: bool = False  # below the verifier's floor, served on the LLM judge's "same"


@dataclass(slots=True)
class Judging:
    """What the LLM judge said during one lookup (proxy/cache/judge.py)."""

    outcomes: list[str] = field(default_factory=list)  # one per candidate, best first
    cost_nanos: int = 0  # all of the lookup's judge calls, charged to the department
    # the first candidate it gave a verdict on, and whether it was "same" (shadow reports it)
    decision: tuple[Entry, bool] | None = None

    def add(self, outcome: str, cost_nanos: int) -> None:
        self.outcomes.append(outcome)
        self.cost_nanos += cost_nanos

    @property
    def outcome(self) -> str:
        """The last outcome: the one that decided the lookup."""
        return self.outcomes[-1] if self.outcomes else "none"


@dataclass(slots=True)
class Flight:
    """A request that missed and went upstream; identical ones wait for `landed`."""

    key: tuple[str, str]  # (scope, normalised text hash)
    started: float  # time.monotonic()
    landed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Lookup:
    """What the lookup learned, carried on the call until the answer is stored."""

    key: Key
    settings: Effective
    controls: Controls
    department: str
    task: str
    limit: int | None = None  # the request's output limit: only answers that fit it are served
    vector: Vector | None = None
    tokens: Tokens | None = None  # the query's per-token outputs (for the match verifier)
    shadow: Hit | None = None
    # the best semantic candidate the match rule judged, and whether it accepted it (shadow
    # mode reports these decisions against the real answer)
    judged: tuple[Entry, bool] | None = None
    judging: Judging | None = None  # the LLM judge was asked about a band candidate
    extra: dict[str, Any] = field(default_factory=dict)
    flight: Flight | None = None  # this request leads a flight: end it once stored or failed
    # the probe before admission found no exact answer at this limit: not asked again, unless a
    # flight for this question landed since `probed_at` (time.monotonic())
    exact_missed: bool = False
    probed_at: float = 0.0
