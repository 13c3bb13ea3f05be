"""Operator actions on the cache (proxy/cache/ops.py): analytics views, wrong-answer reports,
purge. Run on the in-process backend with no embedder: ops only talk to the backend seam."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.cache import ops
from proxy.cache.backend import Entry, Tightened
from proxy.cache.config import CacheConfig
from proxy.cache.memory import MemoryCacheBackend
from proxy.cache.semantic_cache import SemanticCache
from proxy.metrics import Metrics

ADMIN = ops.Viewer(None)
SALES = ops.Viewer("sales")


def make_cache(**config: Any) -> SemanticCache:
    settings = {"enabled": True, "threshold": 0.9,
                "shared_scopes": {"front": {"departments": ["sales", "help"]}}, **config}
    return SemanticCache(CacheConfig.model_validate(settings), MemoryCacheBackend(), None)


def make_metrics() -> Metrics:
    metrics = Metrics(CollectorRegistry())
    metrics.set_known(["sales", "help", "eng"], ["m"])
    return metrics


def entry(entry_id: str, department: str, *, owner: str | None = None, hits: int = 0,
          cost: float = 0.01, text: str = "question", scope: str = "s") -> Entry:
    now = time.time()
    return Entry(id=entry_id, scope=scope, partition=f"p-{owner or department}",
                 owner=owner or department, department=department, model="m", text=text,
                 text_hash="h-" + entry_id, response=b"{}", cost=cost, created=now,
                 expires_at=now + 600, ttl_seconds=600, hits=hits)


async def fill(cache: SemanticCache) -> None:
    for e in (entry("s1", "sales", owner="shared:front", hits=5, cost=0.1),
              entry("h1", "help", owner="shared:front", hits=9, text="help's private prompt"),
              entry("e1", "eng", hits=1, scope="other")):
        await cache.backend.put(e, None, 100)


def served(entry_id: str = "s1", department: str = "sales") -> dict[str, str]:
    return {"entry_id": entry_id, "department": department, "model": "m",
            "partition": "p-shared:front", "scope": "s"}


# -- display -------------------------------------------------------------------------------

def test_shown_query_is_a_hash_by_default() -> None:
    cache = make_cache()
    shown = ops.shown_query(cache, entry("x", "sales", text="secret prompt"))
    assert shown == "sha256:" + hashlib.sha256(b"secret prompt").hexdigest()[:16]


@pytest.mark.parametrize(("text", "shown"), [
    ("a   b\n\tc ", "a b c"),
    ("x" * 8, "x" * 8),
    ("y" * 9, "y" * 8 + "…"),
    ("héllo wörld 你好", "héllo wö…"),
])
def test_shown_query_truncated(text: str, shown: str) -> None:
    cache = make_cache(display={"top_cached_queries": "truncate", "chars": 8})
    assert ops.shown_query(cache, entry("x", "sales", text=text)) == shown


async def test_top_queries_admin_sees_all_a_department_only_its_own() -> None:
    cache = make_cache(display={"limit": 2})
    await fill(cache)
    admin = await ops.top_queries(cache, ADMIN)
    assert [q["entry_id"] for q in admin] == ["h1", "s1"]
    # sales shares a scope with help, but never sees help's prompts
    own = await ops.top_queries(cache, SALES)
    assert [q["entry_id"] for q in own] == ["s1"]
    assert own[0] == {"query": ops.shown_query(cache, entry("s1", "sales")), "hits": 5,
                      "department": "sales", "model": "m", "entry_id": "s1", "scope": "s",
                      "saved": 0.5}


async def test_analytics_for_admin_and_for_a_department() -> None:
    cache = make_cache()
    await fill(cache)
    metrics = make_metrics()
    await cache.backend.incr({"req|hit:exact|sales|m|": 2, "req|miss:none|eng|m|": 2})
    everything = await ops.analytics(cache, ADMIN, metrics)
    assert everything["scope"] == "all" and everything["cache_size"] == 3
    assert (everything["hits"], everything["misses"]) == (2, 2)
    assert everything["mode"] == "semantic" and everything["threshold"] == 0.9
    assert metrics.registry.get_sample_value("meterline_cache_entries",
                                             {"scope_kind": "global"}) == 3
    sales = await ops.analytics(cache, SALES, make_metrics())
    assert sales["scope"] == "department:sales"
    assert sales["cache_size"] == 2  # the shared scope's entries
    assert (sales["hits"], sales["misses"]) == (2, 0)
    assert [q["entry_id"] for q in sales["top_cached_queries"]] == ["s1"]


async def test_tightened_thresholds_shows_live_ones_of_the_viewers_scope() -> None:
    cache = make_cache()
    now = time.time()
    for t in (Tightened("p1", 0.95, now + 100, "shared:front", "help", "m"),
              Tightened("p2", 0.97, now + 100, "eng", "eng", "m"),
              Tightened("p3", 0.99, now - 1, "shared:front", "sales", "m")):
        await cache.backend.set_threshold(t)
    shown = await ops.tightened_thresholds(cache, SALES)
    assert [(t["department"], t["threshold"]) for t in shown] == [("help", 0.95)]
    assert 99 <= shown[0]["expires_in_seconds"] <= 100
    admin = await ops.tightened_thresholds(cache, ADMIN)
    assert [t["department"] for t in admin] == ["eng", "help"]
    assert await ops.reset_thresholds(cache) == 2
    assert await ops.tightened_thresholds(cache, ADMIN) == []


# -- reports -------------------------------------------------------------------------------

async def test_unknown_or_foreign_request_is_not_found() -> None:
    cache = make_cache()
    await cache.backend.remember("r-help", served("h1", "help"), 60)
    with pytest.raises(ops.EntryNotFound):
        await ops.report(cache, "no-such-request", ADMIN, make_metrics())
    with pytest.raises(ops.EntryNotFound):
        await ops.report(cache, "r-help", SALES, make_metrics())


async def test_first_report_evicts_counts_and_tightens_later_ones_change_nothing() -> None:
    cache = make_cache(report={"tighten_step": 0.02})
    await fill(cache)
    await cache.backend.remember("r1", served(), 60)
    metrics = make_metrics()
    first = await ops.report(cache, "r1", SALES, metrics)
    assert first == {"object": "cache.report", "request_id": "r1", "entry_id": "s1",
                     "evicted": True, "false_hit_counted": True, "threshold": 0.92}
    assert await cache.backend.get("s1") is None
    assert (await cache.backend.counters())["false_hit||sales|m|"] == 1
    assert metrics.registry.get_sample_value("meterline_cache_false_hit_reports_total",
                                             {"department": "sales"}) == 1
    tightened = await cache.backend.thresholds()
    assert [(t.partition, t.threshold, t.owner) for t in tightened] == [
        ("p-shared:front", 0.92, "shared:front")]
    again = await ops.report(cache, "r1", ADMIN, metrics)
    assert again == {**first, "evicted": False, "false_hit_counted": False}
    assert (await cache.backend.counters())["false_hit||sales|m|"] == 1


async def test_reports_raise_the_threshold_step_by_step_up_to_the_cap() -> None:
    cache = make_cache(report={"tighten_step": 0.04, "max_threshold": 0.95})
    thresholds = []
    for i in range(3):
        await cache.backend.remember(f"r{i}", served(), 60)
        thresholds.append((await ops.report(cache, f"r{i}", ADMIN, make_metrics()))["threshold"])
    assert thresholds == [0.94, 0.95, 0.95]
    assert await cache.backend.threshold("p-shared:front") == 0.95


async def test_tightening_off_keeps_the_configured_threshold() -> None:
    cache = make_cache(report={"max_threshold": 0.0})
    await cache.backend.remember("r", served(), 60)
    result = await ops.report(cache, "r", ADMIN, make_metrics())
    assert result["false_hit_counted"] is True and result["threshold"] == 0.9
    assert await cache.backend.thresholds() == []


# -- purge ---------------------------------------------------------------------------------

async def test_purge_by_entry_scope_department_and_everything() -> None:
    cache = make_cache()
    await fill(cache)
    assert await ops.purge(cache, entry_id="missing") == 0
    assert await ops.purge(cache, entry_id="e1") == 1
    await fill(cache)
    assert await ops.purge(cache, scope="other") == 1
    await fill(cache)
    # a department purges its owner scope: the shared scope holds sales' and help's entries
    assert await ops.purge(cache, department="sales") == 2
    assert sorted(await cache.backend.ids_where()) == ["e1"]
    await fill(cache)
    assert await ops.purge(cache, everything=True) == 3
    assert await cache.backend.count() == 0
