"""Build the cache from config + settings: backend (memory or Redis Stack) and embedder."""

from __future__ import annotations

from proxy.cache.backend import CacheBackend
from proxy.cache.config import CacheConfig
from proxy.cache.embedder import MINILM_DIM, Embedder, LocalEmbedder, OpenAIEmbedder
from proxy.cache.memory import MemoryCacheBackend
from proxy.cache.redis_backend import RedisCacheBackend
from proxy.cache.semantic_cache import SemanticCache
from proxy.config.errors import ConfigError
from proxy.runtime.services import Services


def needs_embedder(config: CacheConfig) -> bool:
    overrides = config.overrides
    layers = [*overrides.departments.values(), *overrides.models.values(),
              *overrides.routes.values()]
    return config.mode != "exact" or any(o.mode not in (None, "exact") for o in layers)


async def build_embedder(config: CacheConfig) -> Embedder | None:
    if not needs_embedder(config):
        return None
    if config.embedder.kind == "openai" and config.embedder.openai is not None:
        return OpenAIEmbedder.create(config.embedder.openai)
    return await LocalEmbedder.create(config.embedder.local)


async def build_backend(services: Services, config: CacheConfig, dims: int) -> CacheBackend:
    client = services.cache_redis
    if config.backend == "redis" and client is None:
        raise ConfigError(
            "cache.yaml: field 'backend' has value 'redis' but there is no Redis Stack for it: "
            "set REDIS_URL, or REDIS_CACHE_URL when REDIS_URL is a cluster")
    if client is not None and config.backend != "memory":
        backend = RedisCacheBackend(client, services.settings.redis_prefix, dims,
                               config.index_algorithm)
        await backend.start()
        return backend
    return MemoryCacheBackend(max_served=config.report.max_remembered)


async def build_cache(services: Services, config: CacheConfig) -> SemanticCache:
    embedder = await build_embedder(config)
    dims = embedder.dim if embedder is not None else MINILM_DIM
    return SemanticCache(config, await build_backend(services, config, dims), embedder,
                         lambda: services.metrics.record_cache_failure("bookkeeping"))
