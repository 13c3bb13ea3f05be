"""Optional features (spend, cache) attach here so lifecycle stays wiring-only."""

from __future__ import annotations

from proxy.services import Services


async def attach(services: Services) -> None:
    services.pricing = services.config.pricing


async def reconfigure(services: Services) -> None:
    services.pricing = services.config.pricing


async def detach(services: Services) -> None:
    return None
