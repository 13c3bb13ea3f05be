"""Optional features (spend, cache, chat history) attach here so lifecycle stays wiring-only."""

from __future__ import annotations

from typing import Any

from proxy.runtime.services import Services
from proxy.spend.wiring import build_spend, reconfigure_spend


async def attach(services: Services) -> None:
    config = services.config
    services.spend = await build_spend(services.settings, config.departments, config.pricing,
                                       services.metrics, services.redis)
    await _seed_demo_history(services)
    services.cache = await _build_cache(services)
    from proxy.chat.factory import build_history

    services.chat = await build_history(services.settings, services.redis)


async def _seed_demo_history(services: Services) -> None:
    """Synthetic weeks of spend for a demo on embedded state only: never into Redis, which may
    be shared with real traffic, and never without --demo."""
    settings = services.settings
    if not (settings.demo and settings.demo_history) or settings.redis_url or not services.spend:
        return
    import time

    from proxy.demo.history import synthetic_history

    config = services.config
    for record in synthetic_history(time.time(), config.departments.names, config.pricing):
        await services.spend.add_record(record)


async def _build_cache(services: Services) -> Any:
    config = services.config.cache
    if config is None or not config.enabled:
        return None
    from proxy.cache.factory import build_cache

    return await build_cache(services, config)


async def reconfigure(services: Services) -> None:
    if services.spend is not None:
        reconfigure_spend(services.spend, services.settings, services.config.departments,
                          services.config.pricing)
    old = services.cache
    if old is not None and old.config == services.config.cache:
        return
    services.cache = await _build_cache(services)
    if old is not None:
        await old.close()


async def detach(services: Services) -> None:
    if services.cache is not None:
        await services.cache.close()
    if services.spend is not None:
        await services.spend.close()
