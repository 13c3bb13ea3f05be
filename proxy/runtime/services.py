"""Everything a request needs, built once in lifespan and kept on app.state.services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.config.loader import Config
from proxy.config.providers import Provider
from proxy.gateway.upstream import Target, UpstreamClient
from proxy.keys.store import KeyStore
from proxy.memo import BoundedMemo
from proxy.metrics import Metrics
from proxy.settings import Settings

log = logging.getLogger("meterline")
DEMO_CREDENTIAL = "sk-mock-upstream"


@dataclass
class Services:
    settings: Settings
    config: Config
    keys: KeyStore
    upstream: UpstreamClient
    metrics: Metrics
    redis: aioredis.Redis | RedisCluster | None = None  # state: keys, spend (maybe a cluster)
    cache_redis: aioredis.Redis | None = None  # the vector index: REDIS_CACHE_URL, else `redis`
    spend: Any = None  # proxy.spend.ledger.SpendStore
    cache: Any = None  # proxy.cache.semantic_cache.SemanticCache
    cooldowns: Any = None  # proxy.gateway.reliability.Cooldowns
    retry_policy: Any = None  # proxy.gateway.reliability.RetryPolicy
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    tracing: Any = None  # proxy.runtime.tracing.Tracing when MET_TRACES=otlp
    draining: bool = False  # SIGTERM received: /readyz says 503 so the load balancer moves on
    demo_providers: dict[str, tuple[Provider, Provider]] = field(default_factory=dict)
    # per (chain, department) and (department, model) until the next reload
    target_cache: BoundedMemo[tuple[tuple[str, ...], str | None], dict[str, Target]] = field(
        default_factory=BoundedMemo)
    allow_cache: BoundedMemo[tuple[str, str], bool] = field(default_factory=BoundedMemo)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping that must finish even if the client went away; drained at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def drain(self, timeout_s: float = 10.0) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)

    def provider(self, name: str) -> Provider:
        provider = self.config.providers.providers[name]
        if self.settings.demo and self.settings.mock_upstream_url:
            demo = self.demo_providers.get(name)
            if demo is None or demo[0] is not provider:
                data = provider.model_dump()
                data.update(base_url=self.settings.mock_upstream_url, kind="openai")
                demo = self.demo_providers[name] = (provider, Provider.model_validate(data))
            return demo[1]
        return provider

    def credential(self, provider_name: str, department: str | None) -> str | None:
        if self.settings.demo:
            return DEMO_CREDENTIAL
        dept = self.department(department)
        env_name = getattr(dept, "virtual_key_env", None) if dept is not None else None
        if env_name and self.settings.secret(env_name):
            return self.settings.secret(env_name)
        key_env = self.config.providers.providers[provider_name].api_key_env
        return self.settings.secret(key_env) if key_env else None

    def department(self, name: str | None) -> Any:
        depts = self.config.departments
        if depts is None or name is None:
            return None
        return depts.departments.get(name)

    def allows(self, department: str, model: str) -> bool:
        """Whether the department may call `model` (its allowed_models patterns), remembered
        per pair until the next reload. A department missing from the config is not limited
        here: budgets refuse it (accounting.reserve)."""
        key = (department, model)
        found = self.allow_cache.get(key)
        if found is None:
            dept = self.department(department)
            found = self.allow_cache.put(key, dept is None or dept.allows(model))
        return found

    def targets(self, models: tuple[str, ...], department: str | None) -> dict[str, Target]:
        """Concrete upstream targets by key, in order, for a chain of public model names. Built
        once per (chain, department): credentials and providers only change on reload, which
        clears this cache. Callers must not change the dict."""
        key = (models, department)
        found = self.target_cache.get(key)
        if found is None:
            targets = (
                Target(provider_name, self.provider(provider_name), upstream_model,
                       self.credential(provider_name, department))
                for model in models
                for provider_name, upstream_model in self.config.providers.targets_for(model))
            found = self.target_cache.put(key, {t.key: t for t in targets})
        return found
