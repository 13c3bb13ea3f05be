"""Operator actions on the cache: analytics, wrong-answer reports, purge. No HTTP here."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from proxy.cache import stats
from proxy.cache.backend import Entry, Tightened
from proxy.cache.semantic_cache import SemanticCache
from proxy.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: an admin sees everything, a department only its own requests."""

    department: str | None  # None for admin

    @property
    def admin(self) -> bool:
        return self.department is None


def shown_query(cache: SemanticCache, entry: Entry) -> str:
    display = cache.config.display
    if display.top_cached_queries == "truncate":
        text = " ".join(entry.text.split())
        return text if len(text) <= display.chars else text[: display.chars] + "…"
    return "sha256:" + hashlib.sha256(entry.text.encode()).hexdigest()[:16]


async def top_queries(cache: SemanticCache, viewer: Viewer) -> list[dict[str, Any]]:
    limit = cache.config.display.limit
    owner = None if viewer.admin else cache.config.owner_of(viewer.department)
    entries = await cache.backend.top(owner, limit * 4 if owner else limit)
    if not viewer.admin:  # a shared scope holds other departments' prompts: never show them
        entries = [e for e in entries if e.department == viewer.department]
    return [{"query": shown_query(cache, e), "hits": e.hits, "department": e.department,
             "model": e.model, "entry_id": e.id, "scope": e.scope,
             "saved": round(e.hits * e.cost, 8)} for e in entries[:limit]]


async def analytics(cache: SemanticCache, viewer: Viewer, metrics: Metrics) -> dict[str, Any]:
    await cache.flush()  # this replica's hits, hit counts and counters so far
    summary = stats.summarise(await cache.backend.counters(), viewer.department)
    owner = None if viewer.admin else cache.config.owner_of(viewer.department)
    size = await cache.backend.count(owner)
    if viewer.admin:
        metrics.set_cache_entries("global", size)
    return {"object": "cache.analytics",
            "scope": "all" if viewer.admin else f"department:{viewer.department}",
            "mode": cache.config.mode, "threshold": cache.config.threshold,
            **summary, "cache_size": size, "top_cached_queries": await top_queries(cache, viewer),
            "tightened_thresholds": await tightened_thresholds(cache, viewer)}


async def tightened_thresholds(cache: SemanticCache, viewer: Viewer) -> list[dict[str, Any]]:
    """Thresholds raised by wrong-answer reports and still in force; a department sees those of
    its own cache scope (in a shared scope, a report by any member tightens it for all)."""
    owner = None if viewer.admin else cache.config.owner_of(viewer.department)
    now = time.time()
    shown = [t for t in await cache.backend.thresholds()
             if t.expires_at > now and (owner is None or t.owner == owner)]
    return [{"department": t.department, "model": t.model, "threshold": t.threshold,
             "expires_in_seconds": round(t.expires_at - now, 1)}
            for t in sorted(shown, key=lambda t: (t.department, t.model))]


async def reset_thresholds(cache: SemanticCache) -> int:
    return await cache.backend.clear_thresholds()


class EntryNotFound(LookupError):
    """No cache hit is known for that request id (or it is not the caller's)."""


async def report(cache: SemanticCache, request_id: str, viewer: Viewer,
                 metrics: Metrics) -> dict[str, Any]:
    """A user says a cached answer was wrong: evict it, count it, tighten the threshold. Each
    served answer counts once: reporting it again evicts nothing and changes nothing."""
    backend = cache.backend
    await cache.flush()  # a hit this replica served a moment ago is recorded by now
    served = await backend.recall(request_id)
    if served is None or (not viewer.admin and served["department"] != viewer.department):
        raise EntryNotFound(request_id)
    department, model = served["department"], served["model"]
    settings = cache.config.effective(department, model, None)
    first = await backend.claim_report(request_id, cache.config.report.window_seconds)
    if not first:
        current = max(settings.threshold, await backend.threshold(served["partition"]) or 0.0)
        return {"object": "cache.report", "request_id": request_id,
                "entry_id": served["entry_id"], "evicted": False, "false_hit_counted": False,
                "threshold": current}
    evicted = await backend.delete([served["entry_id"]])
    await backend.incr({stats.plain_field("false_hit", department, model): 1})
    metrics.record_false_hit(department)
    threshold = await _tighten(cache, served, settings.threshold)
    return {"object": "cache.report", "request_id": request_id, "entry_id": served["entry_id"],
            "evicted": bool(evicted), "false_hit_counted": True, "threshold": threshold}


async def _tighten(cache: SemanticCache, served: dict[str, str], configured: float) -> float:
    """One step up (capped), in force for `threshold_ttl_seconds` after the last report."""
    partition = served["partition"]
    report = cache.config.report
    current = max(configured, await cache.backend.threshold(partition) or 0.0)
    tightened = round(min(max(report.max_threshold, current), current + report.tighten_step), 6)
    if tightened > configured:  # every counted report restarts the expiry
        owner = cache.config.owner_of(served["department"])
        await cache.backend.set_threshold(Tightened(
            partition, tightened, time.time() + report.threshold_ttl_seconds, owner,
            served["department"], served["model"]))
    return max(current, tightened)


async def purge(cache: SemanticCache, *, entry_id: str | None = None, scope: str | None = None,
                department: str | None = None, everything: bool = False) -> int:
    """Delete by entry id, by scope hash, by department (its owner scope), or all."""
    backend = cache.backend
    if everything:
        return await backend.clear()
    if entry_id is not None:
        return await backend.delete([entry_id])
    owner = cache.config.owner_of(department) if department is not None else None
    return await backend.delete(await backend.ids_where(scope=scope, owner=owner))
