"""Build the spend ledger from settings + config, keep it in step on reload, feed its gauges."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.config.departments import DepartmentsConfig, Period
from proxy.metrics import Metrics
from proxy.settings import Settings, SettingsError
from proxy.spend.ledger import DEFAULT_OPTIONS, Ledger, SpendOptions, create_spend_store
from proxy.spend.notify import NoticeSink, SlackNotifier
from proxy.spend.pricing import PricingTable

FAIL_MODES = ("closed", "open")
# meterline_budget_*_dollars{period} uses day|month (rules and dashboards query those)
PERIOD_LABELS: dict[Period, str] = {"daily": "day", "monthly": "month"}

N = TypeVar("N", int, float)


class BudgetGauges:
    """SpendObserver -> meterline_budget_{remaining,limit}_dollars and the backlog gauge."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def budget(self, department: str, period: Period, remaining: float, limit: float) -> None:
        label = PERIOD_LABELS.get(period)
        if label is not None:
            self.metrics.set_budget(department, label, remaining, limit)

    def backlog(self, size: int) -> None:
        self.metrics.set_spend_backlog(size)


def spend_options(settings: Settings) -> SpendOptions:
    """MET_SPEND_FAIL_MODE (closed|open, default closed), MET_SPEND_RETENTION_DAYS (default 63),
    MET_SPEND_LEASES (1|0, default 1: leases and batched writes on Redis, docs/scaling.md),
    MET_SPEND_FLUSH_MS (one flush window, default 10), MET_SPEND_LEASE_TTL_SECONDS (default 30),
    MET_SPEND_MAX_RECORDS (raw records embedded state keeps, default 20,000)."""
    env = settings.env
    mode = env.get("MET_SPEND_FAIL_MODE") or "closed"
    if mode not in FAIL_MODES:
        raise SettingsError(
            f"Config 'MET_SPEND_FAIL_MODE' has value '{mode}'. Not one of closed, open.")
    days = _positive_float(env, "MET_SPEND_RETENTION_DAYS", 63.0)
    leases = env.get("MET_SPEND_LEASES") or "1"
    if leases not in ("0", "1"):
        raise SettingsError(f"Config 'MET_SPEND_LEASES' has value '{leases}'. Not 0 or 1.")
    return SpendOptions(key_prefix=settings.redis_prefix,
                        fail_mode=cast(Literal["closed", "open"], mode),
                        record_retention_seconds=days * 86_400.0,
                        leases=leases == "1",
                        batch_interval_seconds=_positive_float(
                            env, "MET_SPEND_FLUSH_MS", 10.0) / 1000,
                        lease_ttl_seconds=_positive_float(env, "MET_SPEND_LEASE_TTL_SECONDS",
                                                          30.0),
                        max_memory_records=_positive_int(
                            env, "MET_SPEND_MAX_RECORDS", DEFAULT_OPTIONS.max_memory_records))


def _positive_float(env: Mapping[str, str], key: str, default: float) -> float:
    value = _positive(env, key, float, "a positive number")
    return default if value is None else value


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = _positive(env, key, int, "a positive whole number")
    return default if value is None else value


def _positive(env: Mapping[str, str], key: str, kind: Callable[[str], N],
              what: str) -> N | None:
    """The setting parsed by `kind` (None when unset); SettingsError unless finite and > 0."""
    raw = env.get(key)
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise SettingsError(f"Config '{key}' has value '{raw}'. Not {what}.")
    return value


def notifier_for(departments: DepartmentsConfig, settings: Settings) -> NoticeSink | None:
    url = departments.slack_webhook_url(settings.env)
    return SlackNotifier(url) if url else None


async def build_spend(settings: Settings, departments: DepartmentsConfig, pricing: PricingTable,
                      metrics: Metrics,
                      redis: aioredis.Redis | RedisCluster | None) -> Ledger:
    ledger = create_spend_store(redis, departments, pricing,
                                options=spend_options(settings),
                                notifier=notifier_for(departments, settings))
    ledger.observe(BudgetGauges(metrics))
    await ledger.start()
    return ledger


def reconfigure_spend(ledger: Ledger, settings: Settings, departments: DepartmentsConfig,
                      pricing: PricingTable) -> None:
    ledger.reconfigure(departments, pricing, notifier_for(departments, settings))
