"""Everything a request needs, built once in lifespan and kept on app.state.services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from proxy.config.loader import Config
from proxy.config.providers import Provider
from proxy.gateway.reliability import Cooldowns, RetryPolicy
from proxy.gateway.upstream import UpstreamClient, UpstreamTarget
from proxy.keys.store import KeyStore
from proxy.memo import BoundedMemo
from proxy.metrics import Metrics
from proxy.settings import Settings

if TYPE_CHECKING:  # type-only: both packages' request paths import Services at run time
    from proxy.cache.semantic_cache import SemanticCache
    from proxy.chat.history import HistoryStore
    from proxy.spend.ledger import Ledger

log = logging.getLogger("meterline")
DEMO_CREDENTIAL = "sk-mock-upstream"


@dataclass
class Services:
    settings: Settings
    config: Config
    keys: KeyStore
    upstream: UpstreamClient
    metrics: Metrics
    redis: aioredis.Redis | None = None
    spend: Ledger | None = None
    cache: SemanticCache | None = None
    chat: HistoryStore | None = None
    cooldowns: Cooldowns = field(default_factory=Cooldowns)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    draining: bool = False  # SIGTERM received: /readyz says 503 so the load balancer moves on
    demo_providers: dict[str, tuple[Provider, Provider]] = field(default_factory=dict)
    # per (chain, department) and (department, model) until the next reload
    target_cache: BoundedMemo[tuple[tuple[str, ...], str | None],
                              dict[str, UpstreamTarget]] = field(default_factory=BoundedMemo)
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

    def provider_label(self, name: str) -> str:
        """What the x-meterline-provider header says: "mock" when the built-in demo mock
        answers in place of every configured provider."""
        return "mock" if self.settings.demo and self.settings.mock_upstream_url else name

    def credential(self, provider_name: str, department: str | None) -> str | None:
        return self.credential_of(provider_name, department)[0]

    def credential_of(self, provider_name: str,
                      department: str | None) -> tuple[str | None, str | None]:
        """(credential, the environment variable it came from) for calls to one provider."""
        if self.settings.demo:
            return DEMO_CREDENTIAL, None
        dept = self.department(department)
        env_name = dept.virtual_keys.get(provider_name) if dept is not None else None
        if env_name and (virtual_key := self.settings.secret(env_name)):
            return virtual_key, env_name  # this department's key for this provider, no other
        key_env = self.config.providers.providers[provider_name].api_key_env
        return (self.settings.secret(key_env), key_env) if key_env else (None, None)

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

    def allowed_chain(self, department: str | None, chain: tuple[str, ...]) -> tuple[str, ...]:
        """The models of a routed chain the department may call, in order."""
        if department is None:
            return chain
        return tuple(m for m in chain if self.allows(department, m))

    def enrollable(self, department: str | None, experiment: str) -> bool:
        """A department enters an experiment only if it may use every arm's model: dropping just
        the arms it can't use would bias the experiment's results."""
        experiments = self.config.experiments
        if department is None or experiments is None:
            return True
        return all(self.allows(department, arm.model)
                   for arm in experiments.experiments[experiment].arms)

    def targets(self, models: tuple[str, ...], department: str | None) -> dict[str, UpstreamTarget]:
        """Concrete upstream targets by key, in order, for a chain of public model names. Built
        once per (chain, department): credentials and providers only change on reload, which
        clears this cache. Callers must not change the dict."""
        key = (models, department)
        found = self.target_cache.get(key)
        if found is None:
            targets = (
                UpstreamTarget(provider_name, self.provider(provider_name), upstream_model,
                               *self.credential_of(provider_name, department))
                for model in models
                for provider_name, upstream_model in self.config.providers.targets_for(model))
            found = self.target_cache.put(key, {t.key: t for t in targets})
        return found
