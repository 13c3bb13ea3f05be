"""Cache bookkeeping off the request path: hit counts, expiry extensions, analytics counters and
served-answer records are gathered in memory and written in one batch at most 50 ms later.

A hit used to await three Redis round trips of bookkeeping (hit count + TTL, counters, the served
record) after its answer was chosen: 24 % of a Redis exact hit's proxy CPU (py-spy, docs/
performance.md). Now the request only adds to a `Batch`; a timer writes it with one
`CacheBackend.book` call. A failed write is logged and counted, never raised into a request; the
pending batch is bounded (beyond `max_pending` items, new bookkeeping is dropped and counted).
Readers that must see every served request (analytics, wrong-answer reports) `flush` first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from proxy.cache.backend import Entry

log = logging.getLogger("meterline.cache")

# Each write is one pipeline (~150 us of redis-py CPU): at 260 hits/s on one connection a 10 ms
# interval wrote ~3 hits per pipeline, 50 ms writes ~13. Readers that need it all flush first.
FLUSH_INTERVAL_S = 0.05
MAX_PENDING = 10_000


@dataclass(slots=True)
class HitTally:
    """Hits of one entry since the last flush; `expires_at` is set when the batch is written."""

    entry: Entry  # the latest copy a lookup read (its `hits` is what the store held then)
    count: int = 1
    expires_at: float = 0.0


@dataclass(slots=True)
class Served:
    """Which entry answered a request, kept for wrong-answer reports for `ttl_s`."""

    request_id: str
    fields: dict[str, str]
    ttl_s: float


@dataclass(slots=True)
class Batch:
    """Bookkeeping to write in one go."""

    hits: dict[str, HitTally] = field(default_factory=dict)  # entry id -> tally
    counters: dict[str, float] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)

    def size(self) -> int:
        return len(self.hits) + len(self.counters) + len(self.served)


Expiry = Callable[[Entry, int], float]  # (entry, hits since it was read) -> new expires_at


class Bookkeeper:
    """Gathers bookkeeping and writes it with `write` (the backend's `book`) at most one batch
    at a time, `interval_s` after the first item of a batch."""

    def __init__(self, write: Callable[[Batch], Awaitable[None]], expiry: Expiry,
                 on_failure: Callable[[], None] | None = None,
                 interval_s: float = FLUSH_INTERVAL_S, max_pending: int = MAX_PENDING) -> None:
        self._write = write
        self._expiry = expiry
        self._on_failure = on_failure
        self._interval_s = interval_s
        self._max_pending = max_pending
        self._pending = Batch()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.failures = 0  # batches whose write failed (their bookkeeping is lost)
        self.dropped = 0  # items refused because the pending batch was full

    def hit(self, entry: Entry, counters: Mapping[str, float], served: Served) -> None:
        if not self._room():
            return
        tally = self._pending.hits.get(entry.id)
        if tally is None:
            self._pending.hits[entry.id] = HitTally(entry)
        else:
            tally.count += 1
            tally.entry = entry
        self._pending.served.append(served)
        self._add(counters)

    def count(self, counters: Mapping[str, float]) -> None:
        if self._room():
            self._add(counters)

    def _add(self, counters: Mapping[str, float]) -> None:
        pending = self._pending.counters
        for name, amount in counters.items():
            pending[name] = pending.get(name, 0.0) + amount
        self._schedule()

    def _room(self) -> bool:
        if self._pending.size() < self._max_pending:
            return True
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("cache bookkeeping backlog full: %d items dropped", self.dropped)
        return False

    def _schedule(self) -> None:
        if self._timer is not None or self._flushing is not None:
            return  # a flush is due or running: it reschedules what is left when it ends
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._interval_s, self._start)

    def _start(self) -> None:
        self._timer = None
        self._flushing = asyncio.get_running_loop().create_task(self._flush_then_reschedule())

    async def _flush_then_reschedule(self) -> None:
        try:
            await self._write_pending()
        finally:
            self._flushing = None
            if self._pending.size():
                self._schedule()

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, Batch()
        if not batch.size():
            return
        for tally in batch.hits.values():
            tally.expires_at = self._expiry(tally.entry, tally.count)
        try:
            await self._write(batch)
        except Exception as exc:  # noqa: BLE001 - bookkeeping never fails a request
            self.failures += 1
            log.warning("cache bookkeeping not written (%d hits, %d counters, %d served): %r",
                        len(batch.hits), len(batch.counters), len(batch.served), exc)
            if self._on_failure is not None:
                self._on_failure()

    async def flush(self) -> None:
        """Write everything gathered so far (after the flush already running, if any)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        running = self._flushing
        if running is not None:
            await asyncio.shield(running)
        await self._write_pending()

    async def close(self) -> None:
        await self.flush()
