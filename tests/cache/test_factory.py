"""Building the cache from config and settings (proxy/cache/factory.py): when an embedder is
needed, which backend is chosen, and the error for a Redis backend without REDIS_URL."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from proxy.cache.config import CacheConfig
from proxy.cache.embedder import MINILM_DIM
from proxy.cache.factory import build_backend, build_cache, build_embedder, needs_embedder
from proxy.cache.memory import MemoryCacheBackend
from proxy.cache.redis_backend import RedisCacheBackend
from proxy.config.errors import ConfigError
from proxy.runtime.services import Services
from proxy.settings import Settings


def config(**fields: Any) -> CacheConfig:
    return CacheConfig.model_validate({"enabled": True, **fields})


class FakeServices:
    """What the factory reads from Services."""

    def __init__(self, redis: aioredis.Redis | None, prefix: str = "meterline:") -> None:
        self.redis = redis
        self.cache_redis = redis  # the Redis Stack the vector index lives on
        self.settings = Settings(redis_prefix=prefix)


def services(redis: aioredis.Redis | None = None, prefix: str = "meterline:") -> Services:
    return cast(Services, FakeServices(redis, prefix))


@pytest.mark.parametrize(("fields", "needed"), [
    ({"mode": "exact"}, False),
    ({"mode": "semantic"}, True),
    ({"mode": "shadow"}, True),
    ({"mode": "exact", "overrides": {"departments": {"sales": {"mode": "semantic"}}}}, True),
    ({"mode": "exact", "overrides": {"models": {"m": {"mode": "shadow"}}}}, True),
    ({"mode": "exact", "overrides": {"routes": {"r": {"mode": "exact", "threshold": 0.9}}}},
     False),
    ({"mode": "exact", "overrides": {"departments": {"sales": {"threshold": 0.5}}}}, False),
])
def test_needs_embedder(fields: dict[str, Any], needed: bool) -> None:
    assert needs_embedder(config(**fields)) is needed


async def test_an_exact_only_cache_builds_no_embedder() -> None:
    assert await build_embedder(config(mode="exact")) is None


async def test_without_redis_the_backend_is_in_memory() -> None:
    for backend in ("auto", "memory"):
        built = await build_backend(services(), config(backend=backend), MINILM_DIM)
        assert isinstance(built, MemoryCacheBackend)


async def test_the_in_memory_backend_remembers_as_many_hits_as_configured() -> None:
    built = await build_backend(services(), config(report={"max_remembered": 150}), MINILM_DIM)
    assert isinstance(built, MemoryCacheBackend)
    for n in range(200):
        await built.remember(f"r{n}", {"entry_id": "e"}, 3600)
    assert built.served_count() == 150
    default = await build_backend(services(), config(), MINILM_DIM)
    for n in range(25_000):
        await default.remember(f"r{n}", {"entry_id": "e"}, 3600)
    assert default.served_count() == 20_000  # ~270 bytes each: ~5 MB


async def test_a_redis_backend_without_redis_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        await build_backend(services(), config(backend="redis"), MINILM_DIM)
    assert str(info.value) == (
        "cache.yaml: field 'backend' has value 'redis' but there is no Redis Stack for it: "
        "set REDIS_URL, or REDIS_CACHE_URL when REDIS_URL is a cluster")


async def test_an_exact_only_cache_is_built_on_the_chosen_backend() -> None:
    cache = await build_cache(services(), config(mode="exact"))
    assert cache.embedder is None
    assert isinstance(cache.backend, MemoryCacheBackend)
    assert cache.config.mode == "exact"


@pytest.mark.redis
@pytest.mark.parametrize(("backend", "kind"), [("auto", RedisCacheBackend),
                                                ("redis", RedisCacheBackend),
                                                ("memory", MemoryCacheBackend)])
async def test_with_redis(redis_url: str, redis_prefix: str, backend: str, kind: type) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        built = await build_backend(services(client, redis_prefix), config(backend=backend), 8)
        assert isinstance(built, kind)
        listed: list[bytes] = await client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
        created = f"{redis_prefix}cache-idx".encode() in listed
        assert created is (kind is RedisCacheBackend)  # started: its index exists
    finally:
        await client.aclose()
