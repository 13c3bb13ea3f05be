"""Process settings from the environment (proxy/settings.py): defaults, parsing, and errors
that name the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.settings import REPO_RULES, Settings, SettingsError, default_config_dir


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.redis_url, settings.redis_prefix) == (
        "127.0.0.1", 8080, None, "meterline:")
    assert (settings.demo, settings.demo_history, settings.watch_config) == (False, False, False)
    assert settings.max_body_bytes == 8 * 1024 * 1024
    assert (settings.log_level, settings.log_format, settings.workers) == ("info", "json", 1)
    assert settings.event_loop == "uvloop"
    assert (settings.drain_seconds, settings.shutdown_timeout_seconds) == (5.0, 30.0)
    assert settings.config_dir == default_config_dir() == REPO_RULES  # a checkout has rules/


def test_every_variable_is_read() -> None:
    env = {"MET_HOST": "0.0.0.0", "MET_PORT": "9000", "MET_CONFIG_DIR": "/tmp/rules",
           "REDIS_URL": "redis://r:6379/0", "MET_REDIS_PREFIX": "x:", "MET_DEMO": "yes",
           "MET_MOCK_UPSTREAM_URL": "http://mock", "MET_MAX_BODY_BYTES": "1024",
           "MET_ADMIN_KEY": "sk-admin", "MET_LOG_LEVEL": "DEBUG", "MET_LOG_FORMAT": "Text",
           "MET_WORKERS": "4", "MET_DRAIN_SECONDS": "0", "MET_SHUTDOWN_TIMEOUT_SECONDS": "2.5",
           "MET_WATCH_CONFIG": "on", "MET_ALERTMANAGER_URL": "http://am:9093",
           "MET_EVENT_LOOP": "AsyncIO"}
    s = Settings.from_env(env)
    assert (s.host, s.port, s.config_dir, s.redis_url, s.redis_prefix) == (
        "0.0.0.0", 9000, Path("/tmp/rules"), "redis://r:6379/0", "x:")
    assert (s.demo, s.demo_history, s.mock_upstream_url) == (True, True, "http://mock")
    assert (s.max_body_bytes, s.admin_key, s.log_level, s.log_format) == (
        1024, "sk-admin", "debug", "text")
    assert (s.workers, s.drain_seconds, s.shutdown_timeout_seconds) == (4, 0.0, 2.5)
    assert (s.watch_config, s.alertmanager_url) == (True, "http://am:9093")
    assert s.event_loop == "asyncio"
    assert s.env == env


def test_demo_history_follows_demo_unless_set() -> None:
    assert Settings.from_env({"MET_DEMO": "1", "MET_DEMO_HISTORY": "0"}).demo_history is False
    assert Settings.from_env({"MET_DEMO_HISTORY": "true"}).demo_history is True


def test_empty_values_mean_unset() -> None:
    s = Settings.from_env({"REDIS_URL": "", "MET_ADMIN_KEY": "", "MET_PORT": "",
                           "MET_DEMO": "", "MET_DRAIN_SECONDS": "", "MET_LOG_LEVEL": "",
                           "MET_CONFIG_DIR": ""})
    assert (s.redis_url, s.admin_key, s.port, s.demo, s.drain_seconds, s.log_level) == (
        None, None, 8080, False, 5.0, "info")
    assert s.config_dir == default_config_dir()


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env({"MET_PORT": "9000"}, port=1234, demo=True)
    assert (s.port, s.demo) == (1234, True)


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("MET_PORT", "http", "Config 'MET_PORT' has value 'http'. Not a valid int."),
    ("MET_PORT", "80.5", "Config 'MET_PORT' has value '80.5'. Not a valid int."),
    ("MET_WORKERS", "two", "Config 'MET_WORKERS' has value 'two'. Not a valid int."),
    ("MET_MAX_BODY_BYTES", "1MB", "Config 'MET_MAX_BODY_BYTES' has value '1MB'. Not a valid int."),
    ("MET_DEMO", "maybe", "Config 'MET_DEMO' has value 'maybe'. Not a valid bool."),
    ("MET_WATCH_CONFIG", "2", "Config 'MET_WATCH_CONFIG' has value '2'. Not a valid bool."),
    ("MET_LOG_LEVEL", "verbose", "Config 'MET_LOG_LEVEL' has value 'verbose'. Expected one of: "
                                 "debug, info, warning, error, critical."),
    ("MET_LOG_FORMAT", "xml", "Config 'MET_LOG_FORMAT' has value 'xml'. Expected one of: "
                              "json, text."),
    ("MET_EVENT_LOOP", "trio", "Config 'MET_EVENT_LOOP' has value 'trio'. Expected one of: "
                               "uvloop, asyncio."),
    ("MET_DRAIN_SECONDS", "-1", "Config 'MET_DRAIN_SECONDS' has value '-1'. "
                                "Not a number of seconds (0-3600)."),
    ("MET_DRAIN_SECONDS", "3600", "Config 'MET_DRAIN_SECONDS' has value '3600'. "
                                  "Not a number of seconds (0-3600)."),
    ("MET_SHUTDOWN_TIMEOUT_SECONDS", "soon", "Config 'MET_SHUTDOWN_TIMEOUT_SECONDS' has value "
                                             "'soon'. Not a number of seconds (0-3600)."),
    ("MET_SHUTDOWN_TIMEOUT_SECONDS", "nan", "Config 'MET_SHUTDOWN_TIMEOUT_SECONDS' has value "
                                            "'nan'. Not a number of seconds (0-3600)."),
])
def test_bad_values_name_key_and_value(key: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({key: raw})
    assert str(info.value) == message


@pytest.mark.parametrize(("raw", "value"), [("TRUE", True), ("Yes", True), ("1", True),
                                            ("OFF", False), ("no", False), ("0", False)])
def test_bool_spellings(raw: str, value: bool) -> None:
    assert Settings.from_env({"MET_WATCH_CONFIG": raw}).watch_config is value


def test_secret_reads_the_named_variable() -> None:
    s = Settings.from_env({"OPENAI_API_KEY": "sk-1", "EMPTY": ""})
    assert s.secret("OPENAI_API_KEY") == "sk-1"
    assert s.secret("EMPTY") is None
    assert s.secret("MISSING") is None


def test_env_is_a_copy_and_not_compared() -> None:
    env = {"MET_PORT": "9000"}
    s = Settings.from_env(env)
    env["MET_PORT"] = "1"
    assert s.env["MET_PORT"] == "9000"
    assert Settings.from_env({"UNRELATED": "x"}) == Settings.from_env({})
