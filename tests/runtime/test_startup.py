"""What `meterline serve` tells its operator (proxy/runtime/startup.py): a busy port, what a real
start lacks (each with its fix), and the banner printed only once the socket listens."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, cast

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from proxy.config.loader import load_config
from proxy.errors import ServiceUnavailable
from proxy.keys.store import KeyRecord, KeyStore, MemoryKeyStore, hash_key
from proxy.metrics import Metrics
from proxy.runtime.services import Services
from proxy.runtime.startup import (
    AnnouncingServer,
    bind_problem,
    missing_credentials,
    missing_setup,
)
from proxy.settings import REPO_RULES, Settings

NO_ADMIN = ("no admin key: set MET_ADMIN_KEY to a long random secret and restart "
            "(or `meterline init DIR` writes a config directory with one)")
NO_KEYS = ("no inbound keys, so every API call is a 401: "
           "`meterline keys create --department NAME` prints one")
CONFIG = load_config(REPO_RULES)


def key(key_id: str, *, admin: bool = False, disabled: bool = False,
        expires_at: float | None = None) -> KeyRecord:
    return KeyRecord(key_id, hash_key("sk-" + key_id), None if admin else "sales", None, admin,
                     0.0, expires_at, disabled=disabled)


def services(records: list[KeyRecord] | None = None, *, keys: KeyStore | None = None,
             demo: bool = False, env: dict[str, str] | None = None) -> Services:
    settings = Settings.from_env(env or {}, demo=demo)
    store = keys if keys is not None else MemoryKeyStore(records or [])
    return Services(settings, CONFIG, store, cast(Any, None), Metrics(CollectorRegistry()))


ALL_CREDENTIALS = {"OPENAI_API_KEY": "sk-o", "OPENROUTER_API_KEY": "sk-r", "VLLM_API_KEY": "x"}


async def test_a_demo_lacks_nothing() -> None:
    assert await missing_setup(services(demo=True)) == []


async def test_a_bare_start_lists_every_fix() -> None:
    problems = await missing_setup(services())
    assert problems == [NO_ADMIN, NO_KEYS,
                        "provider 'local-vllm' has no credential: set VLLM_API_KEY",
                        "provider 'openai' has no credential: set OPENAI_API_KEY",
                        "provider 'openrouter' has no credential: set OPENROUTER_API_KEY"]


async def test_a_complete_start_lacks_nothing() -> None:
    assert await missing_setup(services([key("a", admin=True), key("d")],
                                        env=ALL_CREDENTIALS)) == []


async def test_keys_that_cannot_be_used_do_not_count() -> None:
    past = time.time() - 1
    records = [key("a", admin=True, disabled=True), key("d", expires_at=past)]
    problems = await missing_setup(services(records, env=ALL_CREDENTIALS))
    assert problems == [NO_ADMIN, NO_KEYS]
    only_admin = await missing_setup(services([key("a", admin=True)], env=ALL_CREDENTIALS))
    assert only_admin == [NO_KEYS]


async def test_an_unreachable_key_store_is_left_to_readyz() -> None:
    class DownKeys(MemoryKeyStore):
        async def list(self) -> list[KeyRecord]:
            raise ServiceUnavailable("Redis is down")

    problems = await missing_setup(services(keys=DownKeys([]), env=ALL_CREDENTIALS))
    assert problems == []


def test_a_departments_own_key_is_a_credential() -> None:
    others = {"OPENROUTER_API_KEY": "k", "VLLM_API_KEY": "k"}
    lacking = missing_credentials(services(env={**others,
                                                "METERLINE_VK_SALES": "sk-sales"}))
    assert lacking == []
    assert missing_credentials(services(env=others)) == [("openai", "OPENAI_API_KEY")]


def test_bind_problem_on_a_free_and_a_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert bind_problem("127.0.0.1", port) is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert bind_problem("127.0.0.1", taken) == (
            f"127.0.0.1:{taken} is already in use (another meterline?); choose another port "
            f"with --port {taken + 1} (or MET_PORT)")


def test_bind_problem_on_an_address_that_is_not_ours() -> None:
    problem = bind_problem("192.0.2.1", 8080)  # TEST-NET-1: never a local address
    assert problem is not None
    assert problem.startswith("cannot listen on 192.0.2.1:8080: ")


async def test_the_banner_is_printed_once_the_socket_listens(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(Starlette(), host="127.0.0.1", port=port, log_level="error",
                            lifespan="off", ws="none")
    server = AnnouncingServer(config, f"Meterline is ready on :{port}")
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        assert capsys.readouterr().out == f"Meterline is ready on :{port}\n"
        assert bind_problem("127.0.0.1", port) is not None  # it really listens
    finally:
        server.should_exit = True
        await task
    assert capsys.readouterr().out == ""  # said once


async def test_no_banner_when_the_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = uvicorn.Config(Starlette(), host="127.0.0.1", port=port, log_level="critical",
                                lifespan="off", ws="none")
        server = AnnouncingServer(config, "READY")
        with pytest.raises(SystemExit):
            await server.serve()
    assert "READY" not in capsys.readouterr().out
