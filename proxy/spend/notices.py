"""Budget notices, sent once per key: a local memo first, then a SET NX claim in the backend.

Split out of proxy.spend.ledger so the ledger keeps to policy; delivery happens in background tasks
that `drain()` waits for (tests, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

from proxy.spend.budgets import BackendDown, SpendBackend
from proxy.spend.notify import BudgetNotice, NoticeSink, NotifyError

log = logging.getLogger("proxy.spend.ledger")
MEMO_LIMIT = 1000


class Notices:
    """Deduplicated, best-effort delivery of `BudgetNotice`s to one sink."""

    def __init__(
        self, backend: SpendBackend, sink: NoticeSink | None, clock: Callable[[], float]
    ) -> None:
        self.backend = backend
        self.sink = sink
        self._clock = clock
        self._claimed_here: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, notice: BudgetNotice, key: str, ttl_seconds: float) -> None:
        """Send in the background, once per key: the local memo spares Redis on repeats."""
        now = self._clock()
        sink = self.sink
        if sink is None or self._claimed_here.get(key, 0.0) > now:
            return
        if len(self._claimed_here) > MEMO_LIMIT:
            self._claimed_here = {k: t for k, t in self._claimed_here.items() if t > now}
        self._claimed_here[key] = now + ttl_seconds
        task = asyncio.create_task(self._deliver(sink, notice, key, ttl_seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, sink: NoticeSink, notice: BudgetNotice, key: str, ttl_seconds: float
    ) -> None:
        ttl = max(1, math.ceil(ttl_seconds))
        try:
            if not await self.backend.claim_notice(key, ttl):
                return
        except BackendDown:
            log.warning("spend backend down; deduplicating notice %s in this process only", key)
        try:
            await sink.send(notice)
        except NotifyError as exc:
            log.warning("budget notice %s not delivered: %s", key, exc)
            self.forget_locally(key)
            with contextlib.suppress(BackendDown):
                await self.backend.release_notice(key)

    def forget_locally(self, key: str) -> None:
        self._claimed_here.pop(key, None)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
