"""Building the spend ledger from settings and config (proxy/spend/wiring.py): options from the
environment, the Slack notifier, and the budget gauges fed by the ledger."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from proxy.config.departments import DepartmentsConfig, parse_departments
from proxy.metrics import Metrics
from proxy.settings import Settings, SettingsError
from proxy.spend.memory import MemorySpendBackend
from proxy.spend.notify import SlackNotifier
from proxy.spend.pricing import load_pricing
from proxy.spend.redis_backend import RedisSpendBackend
from proxy.spend.wiring import (
    BudgetGauges,
    build_spend,
    notifier_for,
    reconfigure_spend,
    spend_options,
)

DAY = 86_400.0


def departments(**notifications: str | None) -> DepartmentsConfig:
    raw: dict[str, object] = {"departments": {"eng": {"name": "eng"}}}
    if notifications:
        raw["notifications"] = notifications
    return parse_departments(raw)


def test_spend_options_defaults() -> None:
    options = spend_options(Settings.from_env({}))
    assert options.fail_mode == "closed"
    assert options.record_retention_seconds == 63 * DAY
    assert options.key_prefix == "meterline:"


def test_spend_options_from_the_environment() -> None:
    options = spend_options(Settings.from_env({"MET_SPEND_FAIL_MODE": "open",
                                               "MET_SPEND_RETENTION_DAYS": "0.5",
                                               "MET_REDIS_PREFIX": "x:"}))
    assert (options.fail_mode, options.record_retention_seconds, options.key_prefix) == (
        "open", DAY / 2, "x:")


def test_leases_and_flush_window_from_the_environment() -> None:
    default = spend_options(Settings.from_env({}))
    assert (default.leases, default.batch_interval_seconds, default.lease_ttl_seconds) == (
        True, 0.01, 30.0)
    options = spend_options(Settings.from_env({"MET_SPEND_LEASES": "0", "MET_SPEND_FLUSH_MS": "25",
                                               "MET_SPEND_LEASE_TTL_SECONDS": "3"}))
    assert (options.leases, options.batch_interval_seconds, options.lease_ttl_seconds) == (
        False, 0.025, 3.0)


def test_embedded_record_bound_from_the_environment() -> None:
    assert spend_options(Settings.from_env({})).max_memory_records == 20_000
    options = spend_options(Settings.from_env({"MET_SPEND_MAX_RECORDS": "250000"}))
    assert options.max_memory_records == 250_000


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("MET_SPEND_FAIL_MODE", "Closed", "Config 'MET_SPEND_FAIL_MODE' has value 'Closed'. "
                                      "Not one of closed, open."),
    ("MET_SPEND_FAIL_MODE", "ignore", "Config 'MET_SPEND_FAIL_MODE' has value 'ignore'. "
                                      "Not one of closed, open."),
    ("MET_SPEND_RETENTION_DAYS", "0", "Config 'MET_SPEND_RETENTION_DAYS' has value '0'. "
                                      "Not a positive number."),
    ("MET_SPEND_RETENTION_DAYS", "-3", "Config 'MET_SPEND_RETENTION_DAYS' has value '-3'. "
                                       "Not a positive number."),
    ("MET_SPEND_RETENTION_DAYS", "two", "Config 'MET_SPEND_RETENTION_DAYS' has value 'two'. "
                                        "Not a positive number."),
    ("MET_SPEND_LEASES", "yes", "Config 'MET_SPEND_LEASES' has value 'yes'. Not 0 or 1."),
    ("MET_SPEND_FLUSH_MS", "0", "Config 'MET_SPEND_FLUSH_MS' has value '0'. "
                                "Not a positive number."),
    ("MET_SPEND_LEASE_TTL_SECONDS", "-1", "Config 'MET_SPEND_LEASE_TTL_SECONDS' has value '-1'. "
                                          "Not a positive number."),
    ("MET_SPEND_MAX_RECORDS", "0", "Config 'MET_SPEND_MAX_RECORDS' has value '0'. "
                                   "Not a positive whole number."),
    ("MET_SPEND_MAX_RECORDS", "1e5", "Config 'MET_SPEND_MAX_RECORDS' has value '1e5'. "
                                     "Not a positive whole number."),
    ("MET_SPEND_MAX_RECORDS", "-5", "Config 'MET_SPEND_MAX_RECORDS' has value '-5'. "
                                    "Not a positive whole number."),
])
def test_bad_values_name_key_and_value(key: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        spend_options(Settings.from_env({key: raw}))
    assert str(info.value) == message


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_retention_that_is_not_a_finite_number_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="Not a positive number"):
        spend_options(Settings.from_env({"MET_SPEND_RETENTION_DAYS": raw}))


def test_notifier_for_uses_the_named_environment_variable() -> None:
    env = {"METERLINE_SLACK_WEBHOOK_URL": "https://hooks.slack.test/x", "OTHER": "https://o"}
    settings = Settings.from_env(env)
    assert isinstance(notifier_for(departments(), settings), SlackNotifier)
    assert isinstance(notifier_for(departments(slack_webhook_env="OTHER"), settings),
                      SlackNotifier)
    assert notifier_for(departments(slack_webhook_env=None), settings) is None
    assert notifier_for(departments(), Settings.from_env({})) is None
    assert notifier_for(departments(), Settings.from_env(
        {"METERLINE_SLACK_WEBHOOK_URL": ""})) is None


def test_budget_gauges_write_day_and_month_budgets() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.set_known(["eng"], ["m"])
    gauges = BudgetGauges(metrics)
    gauges.budget("eng", "daily", 7.5, 10.0)
    gauges.budget("eng", "monthly", 90.0, 100.0)
    gauges.budget("eng", "hourly", 1.0, 2.0)  # no hourly series: dashboards use day|month
    gauges.backlog(3)  # also writes the pending budget values

    def value(name: str, period: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"department": "eng", "period": period})

    assert value("meterline_budget_remaining_dollars", "day") == 7.5
    assert value("meterline_budget_limit_dollars", "day") == 10.0
    assert value("meterline_budget_remaining_dollars", "month") == 90.0
    assert value("meterline_budget_remaining_dollars", "hour") is None
    assert value("meterline_budget_remaining_dollars", "hourly") is None
    assert metrics.registry.get_sample_value("meterline_spend_backlog_records") == 3


async def test_build_spend_without_redis_is_in_memory_and_reconfigurable() -> None:
    settings = Settings.from_env({})
    ledger = await build_spend(settings, departments(), load_pricing(),
                               Metrics(CollectorRegistry()), None)
    try:
        assert isinstance(ledger.backend, MemorySpendBackend)
        assert ledger.options.fail_mode == "closed"
        bigger = parse_departments({"departments": {"eng": {"name": "eng"},
                                                    "ops": {"name": "ops"}}})
        reconfigure_spend(ledger, settings, bigger, load_pricing())
        assert ledger.departments is bigger
    finally:
        await ledger.close()


@pytest.mark.redis
async def test_build_spend_with_redis_uses_the_shared_client(redis_url: str,
                                                             redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = await build_spend(Settings.from_env({"MET_REDIS_PREFIX": redis_prefix}),
                                   departments(), load_pricing(),
                                   Metrics(CollectorRegistry()), client)
        assert isinstance(ledger.backend, RedisSpendBackend)
        assert ledger.backend.client is client and ledger.backend.prefix == redis_prefix
        await ledger.close()
        assert await client.ping()  # the store does not close the app's client
    finally:
        await client.aclose()
