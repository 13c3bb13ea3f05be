"""Build Services at startup and close them at shutdown; reload config atomically."""

from __future__ import annotations

import logging

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.config.loader import Config, load_config
from proxy.gateway.reliability import Cooldowns, Reliability, RetryPolicy
from proxy.gateway.upstream import UpstreamClient
from proxy.keys.store import MemoryKeyStore, RedisKeyStore, records_from_config
from proxy.metrics import Metrics
from proxy.runtime.services import Services
from proxy.runtime.startup import missing_setup
from proxy.settings import Settings
from proxy.spend.ledger import spend_redis_client
from proxy.spend.wiring import spend_options

log = logging.getLogger("meterline")


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


async def start_services(settings: Settings) -> Services:
    config = load_config(settings.config_dir)
    redis = (spend_redis_client(settings.redis_url, spend_options(settings))
             if settings.redis_url else None)
    seeds = records_from_config(config.keys, settings.demo, settings.admin_key)
    keys: MemoryKeyStore | RedisKeyStore
    if redis is not None:
        keys = RedisKeyStore(redis, settings.redis_prefix)
        await keys.configure(seeds)
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
    settings = services.settings
    await services.keys.configure(records_from_config(config.keys, settings.demo,
                                                      settings.admin_key))
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
