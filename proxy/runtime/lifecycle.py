"""Build Services at startup and close them at shutdown; reload config atomically."""

from __future__ import annotations

import gc
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.config.loader import Config, load_config
from proxy.gateway.reliability import Cooldowns, Reliability, RetryPolicy
from proxy.gateway.upstream import UpstreamClient
from proxy.keys.store import MemoryKeyStore, RedisKeyStore, records_from_config
from proxy.metrics import Metrics
from proxy.runtime.services import Services
from proxy.runtime.startup import missing_setup
from proxy.settings import Settings
from proxy.spend.memory import MemoryBackend

log = logging.getLogger("meterline")
# Without a spend store, experiment results and feedback read this bounded in-process log.
RECORD_LOG_SIZE = 20_000
RECORD_LOG_SECONDS = 7 * 86_400.0


def known_labels(metrics: Metrics, config: Config) -> None:
    experiments = {}
    if config.experiments is not None:
        experiments = {name: [a.name for a in e.arms]
                       for name, e in config.experiments.experiments.items()}
    metrics.set_known(
        (*config.departments.names, ADMIN_DEPARTMENT), config.model_names,
        providers=config.providers.providers, experiments=experiments,
        routing_rules=[r.name for r in config.routing.rules] if config.routing else (),
        routes=("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                "/v1/models"),
    )
    metrics.set_config_version(config.version)


def reliability_of(config: Config) -> tuple[RetryPolicy, Reliability]:
    """routing.yaml `reliability:` (defaults when absent), timeouts keyed by concrete target."""
    section = config.routing.reliability if config.routing is not None else Reliability()
    keys = {m: [f"{p}/{u}" for p, u in config.providers.targets_for(m)] for m in config.model_names}
    return section.retry_policy(keys), section


def connect_redis(url: str) -> aioredis.Redis:
    """The client for keys and cache. One retry on a dropped connection: redis-py 8.1's RESP3
    pools hand out connections Redis has closed (e.g. after a restart), so the first command on
    each failed. Key reads and writes are idempotent; at worst a cache counter counts twice."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 1, (RedisConnectionError,)))


async def start_services(settings: Settings) -> Services:
    config = load_config(settings.config_dir)
    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    seeds = records_from_config(config.keys, settings.demo, settings.admin_key)
    keys: MemoryKeyStore | RedisKeyStore
    if redis is not None:
        keys = RedisKeyStore(redis, settings.redis_prefix)
        await keys.seed(seeds)
    else:
        keys = MemoryKeyStore(seeds)
    metrics = Metrics()
    known_labels(metrics, config)
    upstream = UpstreamClient(config.providers.providers)
    policy, reliability = reliability_of(config)
    cooldowns = Cooldowns(reliability.cooldown.failures, reliability.cooldown.seconds)
    services = Services(settings, config, keys, upstream, metrics, redis,
                        cooldowns=cooldowns, retry_policy=policy)
    await attach_features(services)
    if services.spend is None:
        services.record_log = MemoryBackend(clock=time.time, max_records=RECORD_LOG_SIZE,
                                            retention_seconds=RECORD_LOG_SECONDS)
    settle_heap()
    log.info("services built: config %s, %s state", config.version,
             "redis" if redis else "embedded")
    warn_config(config)
    if problems := await missing_setup(services):
        log.warning("not usable yet:\n%s", "\n".join(f"  - {p}" for p in problems))
    return services


def warn_config(config: Config) -> None:
    """Scopes that name nothing load (check-config --strict refuses them), but say so."""
    for warning in config.warnings:
        log.warning("config: %s", warning)


DEFAULT_GC_THRESHOLDS = gc.get_threshold()


def settle_heap() -> None:
    """Move everything built at startup (config, models, word lists) out of the collector's
    sight and collect less often: a request allocates short-lived objects only, and full
    collections over a large long-lived heap cost ~20 % of the request path (measured with
    the shared bench harness: 0.50 -> 0.42 ms CPU per non-streamed request)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def attach_features(services: Services) -> None:
    """Spend store and cache: each feature module builds its own backend from settings."""
    from proxy.runtime import features
    await features.attach(services)


async def reload_config(services: Services) -> Config:
    """Validate the new config fully, then swap it in; on error the old config stays live."""
    config = load_config(services.settings.config_dir)
    warn_config(config)
    policy, reliability = reliability_of(config)
    services.config = config
    services.target_cache.clear()
    services.allow_cache.clear()
    services.retry_policy = policy
    services.cooldowns.configure(reliability.cooldown)
    services.upstream.update_providers(config.providers.providers)
    known_labels(services.metrics, config)
    from proxy.runtime import features
    await features.reconfigure(services)
    return config


async def stop_services(services: Services) -> None:
    await services.drain()
    from proxy.runtime import features
    await features.detach(services)
    await services.upstream.close()
    if services.redis is not None:
        await services.redis.aclose()
    release_heap()


def release_heap() -> None:
    """Undo settle_heap's freeze once the app has stopped: what it froze (this app's services,
    and any garbage of apps stopped before it) is collectable again. A process that runs apps
    one after another (the test suite starts hundreds) otherwise keeps every one of them, about
    100 MB each."""
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC_THRESHOLDS)  # collected as the heap grows, not all at once
