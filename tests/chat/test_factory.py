"""Building the chat history store from settings (proxy/chat/factory.py)."""

from __future__ import annotations

import logging
import socket

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.chat.factory import build_history, retention_seconds
from proxy.chat.history import Conversation, Message
from proxy.chat.memory import MemoryHistory
from proxy.chat.redis_backend import RedisHistory
from proxy.settings import Settings, SettingsError

DAY = 86_400.0


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


@pytest.mark.parametrize(("raw", "seconds"), [
    (None, 90 * DAY),
    ("", 90 * DAY),
    ("1", DAY),
    ("0.5", DAY / 2),
    ("3650", 3650 * DAY),
])
def test_retention_seconds(raw: str | None, seconds: float) -> None:
    env = {} if raw is None else {"MET_CHAT_RETENTION_DAYS": raw}
    assert retention_seconds(settings(**env)) == seconds


@pytest.mark.parametrize("raw", ["0", "-1", "3650.01", "forever", "nan", "inf", "1 day"])
def test_bad_retention_names_key_and_value(raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        retention_seconds(settings(MET_CHAT_RETENTION_DAYS=raw))
    assert str(info.value) == (f"Config 'MET_CHAT_RETENTION_DAYS' has value '{raw}'. "
                               "Not a number of days from 0 (excluded) to 3650.")


async def test_without_redis_the_history_is_in_memory() -> None:
    store = await build_history(settings(MET_CHAT_RETENTION_DAYS="2"), None)
    assert isinstance(store, MemoryHistory)
    conversation = Conversation("c", "t", 1.0, 1.0, [Message(role="user", content="x")])
    await store.put("ann", conversation)  # updated long ago: past a 2-day retention
    assert await store.get("ann", "c") is None


@pytest.mark.redis
async def test_with_redis_the_index_is_created_under_the_prefix(redis_url: str,
                                                               redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = await build_history(settings(MET_REDIS_PREFIX=redis_prefix), client)
        assert isinstance(store, RedisHistory)
        listed: list[bytes] = await client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
        assert f"{redis_prefix}chat-messages".encode() in listed
    finally:
        await client.aclose()


async def test_unreachable_redis_at_start_still_builds_the_store(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
    try:
        with caplog.at_level(logging.WARNING, logger="proxy.chat.factory"):
            store = await build_history(settings(), client)
        assert isinstance(store, RedisHistory)
        assert "chat history index not created" in caplog.text
    finally:
        await client.aclose()
