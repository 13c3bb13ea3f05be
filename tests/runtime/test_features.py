"""Attaching the optional features to Services (proxy/runtime/features.py): spend, demo history
(embedded demo only), the cache (only when enabled, rebuilt only when its config changes) and
chat history, and closing them again."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from proxy.cache.config import CacheConfig
from proxy.chat.memory import MemoryHistory
from proxy.config.loader import load_config
from proxy.keys.store import MemoryKeyStore
from proxy.metrics import Metrics
from proxy.runtime import features
from proxy.runtime.services import Services
from proxy.settings import REPO_RULES, Settings
from proxy.spend.memory import MemorySpendBackend

EXACT = CacheConfig(enabled=True, mode="exact")  # no embedder: nothing to download or load
BASE = load_config(REPO_RULES)


def make(cache: CacheConfig | None = EXACT, **settings: Any) -> Services:
    config = dataclasses.replace(BASE, cache=cache)
    return Services(Settings(**settings), config, MemoryKeyStore([]), cast(Any, None),
                    Metrics(CollectorRegistry()))


async def records_of(services: Services) -> int:
    assert services.spend is not None
    return len(await services.spend.records(0.0, time.time() + 1))


async def test_attach_builds_every_feature_on_embedded_state() -> None:
    services = make()
    await features.attach(services)
    try:
        assert services.spend is not None
        assert isinstance(services.spend.backend, MemorySpendBackend)
        assert services.cache is not None and services.cache.config is services.config.cache
        assert services.cache.embedder is None
        assert isinstance(services.chat, MemoryHistory)
        assert await records_of(services) == 0  # no demo: no synthetic history
    finally:
        await features.detach(services)


@pytest.mark.parametrize("cache", [None, CacheConfig(enabled=False)])
async def test_no_cache_unless_enabled(cache: CacheConfig | None) -> None:
    services = make(cache)
    await features.attach(services)
    try:
        assert services.cache is None
    finally:
        await features.detach(services)


async def test_an_embedded_demo_gets_synthetic_history() -> None:
    services = make(demo=True, demo_history=True)
    await features.attach(services)
    try:
        assert await records_of(services) > 0
        assert services.spend is not None
        seeded = await services.spend.records(0.0, time.time() + 1)
        assert {r.department for r in seeded} <= set(BASE.departments.names)
    finally:
        await features.detach(services)


@pytest.mark.parametrize("settings", [
    {"demo": True, "demo_history": False},
    {"demo": False, "demo_history": True},
])
async def test_no_synthetic_history_without_demo_and_history(settings: dict[str, Any]) -> None:
    services = make(**settings)
    await features.attach(services)
    try:
        assert await records_of(services) == 0
    finally:
        await features.detach(services)


async def test_no_synthetic_history_when_redis_is_configured() -> None:
    """Redis may be shared with real traffic: the seeding looks at the setting, not at which
    store this process happens to hold."""
    services = make(demo=True, demo_history=True, redis_url="redis://example.invalid:6379")
    await features.attach(services)  # services.redis stays None: spend is in memory here
    try:
        assert await records_of(services) == 0
    finally:
        await features.detach(services)


async def test_reconfigure_keeps_an_unchanged_cache_and_replaces_a_changed_one() -> None:
    services = make()
    await features.attach(services)
    try:
        first = services.cache
        services.config = dataclasses.replace(services.config, cache=CacheConfig(
            enabled=True, mode="exact"))  # equal, not the same object
        await features.reconfigure(services)
        assert services.cache is first
        services.config = dataclasses.replace(services.config, cache=CacheConfig(
            enabled=True, mode="exact", ttl_seconds=60))
        await features.reconfigure(services)
        assert services.cache is not first and services.cache is not None
        assert services.cache.config.ttl_seconds == 60
        services.config = dataclasses.replace(services.config, cache=None)
        await features.reconfigure(services)
        assert services.cache is None
    finally:
        await features.detach(services)


async def test_reconfigure_applies_new_departments_to_spend() -> None:
    services = make(cache=None)
    await features.attach(services)
    try:
        assert services.spend is not None
        fewer = BASE.departments.model_copy(update={
            "departments": {"sales": BASE.departments.departments["sales"]}})
        services.config = dataclasses.replace(services.config, departments=fewer)
        await features.reconfigure(services)
        assert services.spend.departments is fewer
    finally:
        await features.detach(services)
