"""Process settings: the only reader of os.environ. Errors name the key and the bad value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"
SYSTEM_RULES = Path("/etc/meterline")  # where the Docker image puts rules/


LogFormat = Literal["json", "text"]
EventLoop = Literal["uvloop", "asyncio"]
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class SettingsError(ValueError):
    pass


def default_config_dir() -> Path:
    """The repository's rules/ in a checkout (pip install -e .), else /etc/meterline."""
    return REPO_RULES if REPO_RULES.is_dir() else SYSTEM_RULES


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"Config '{key}' has value '{raw}'. Not a valid int.") from None


def seconds(env: Mapping[str, str], key: str, default: float, *, allow_zero: bool = True) -> float:
    """A number of seconds below an hour; NaN, infinities and junk are refused by name.

    ``allow_zero=False`` for timeouts, where 0 would mean "fail at once".
    """
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 3600):
        bounds = "0-3600" if allow_zero else "more than 0, below 3600"
        raise SettingsError(
            f"Config '{key}' has value '{raw}'. Not a number of seconds ({bounds}).")
    return value


def _choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(key) or default
    if raw.lower() not in choices:
        raise SettingsError(
            f"Config '{key}' has value '{raw}'. Expected one of: {', '.join(choices)}.")
    return raw.lower()


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"Config '{key}' has value '{raw}'. Not a valid bool.")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    config_dir: Path = field(default_factory=default_config_dir)
    redis_url: str | None = None
    redis_prefix: str = "meterline:"
    redis_cluster: bool = False  # REDIS_URL names one node of a Redis Cluster
    redis_cache_url: str | None = None  # a Redis Stack for the cache's vector index
    demo: bool = False
    mock_upstream_url: str | None = None  # demo: where the built-in mock answers
    demo_history: bool = False  # demo: fill the embedded spend store with synthetic history
    max_body_bytes: int = 8 * 1024 * 1024
    admin_key: str | None = None
    log_level: str = "info"
    log_format: LogFormat = "json"  # stderr lines of `meterline serve` (runtime/logs.py)
    workers: int = 1
    # the server's event loop: uvloop (throughput) or asyncio's own (without uvloop's
    # 100-400 ms slowest requests under saturation; docs/performance.md "The event loop")
    event_loop: EventLoop = "uvloop"
    # SIGTERM: /readyz answers 503 for drain_seconds while requests are still served (the load
    # balancer stops sending), then new connections are refused and requests in flight get up
    # to shutdown_timeout_seconds to finish before they are cut (and settled)
    drain_seconds: float = 5.0
    shutdown_timeout_seconds: float = 30.0
    watch_config: bool = False  # reload when a rules file changes (mtime polled every 2 s)
    alertmanager_url: str | None = None  # GET /admin/alerts reads its API v2 when set
    traces: str = "off"  # off | otlp (OTEL_EXPORTER_OTLP_* say where): proxy/runtime/tracing.py
    trace_exporter: Any = field(default=None, repr=False, compare=False)  # a SpanExporter (tests)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        settings = cls(
            host=env.get("MET_HOST", "127.0.0.1"),
            port=_int(env, "MET_PORT", 8080),
            config_dir=Path(env["MET_CONFIG_DIR"])
            if env.get("MET_CONFIG_DIR")
            else default_config_dir(),
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("MET_REDIS_PREFIX", "meterline:"),
            redis_cluster=_bool(env, "MET_REDIS_CLUSTER", False),
            redis_cache_url=env.get("REDIS_CACHE_URL") or None,
            demo=_bool(env, "MET_DEMO", False),
            mock_upstream_url=env.get("MET_MOCK_UPSTREAM_URL") or None,
            demo_history=_bool(env, "MET_DEMO_HISTORY", _bool(env, "MET_DEMO", False)),
            max_body_bytes=_int(env, "MET_MAX_BODY_BYTES", 8 * 1024 * 1024),
            admin_key=env.get("MET_ADMIN_KEY") or None,
            log_level=_choice(env, "MET_LOG_LEVEL", "info", LOG_LEVELS),
            log_format="text" if _choice(env, "MET_LOG_FORMAT", "json", ("json", "text")) == "text"
            else "json",
            workers=_int(env, "MET_WORKERS", 1),
            event_loop="asyncio" if _choice(env, "MET_EVENT_LOOP", "uvloop",
                                            ("uvloop", "asyncio")) == "asyncio" else "uvloop",
            drain_seconds=seconds(env, "MET_DRAIN_SECONDS", 5.0),
            shutdown_timeout_seconds=seconds(env, "MET_SHUTDOWN_TIMEOUT_SECONDS", 30.0),
            watch_config=_bool(env, "MET_WATCH_CONFIG", False),
            alertmanager_url=env.get("MET_ALERTMANAGER_URL") or None,
            traces=_choice(env, "MET_TRACES", "off", ("off", "otlp")),
            env=env,
        )
        return replace(settings, **overrides) if overrides else settings

    def secret(self, name: str) -> str | None:
        """An upstream credential, read from the environment variable that config names."""
        return self.env.get(name) or None
