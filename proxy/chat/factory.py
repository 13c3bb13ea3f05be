"""Build the history store from settings: Redis (RediSearch) when REDIS_URL is set, else memory.
MET_CHAT_RETENTION_DAYS (default 90): conversations not updated for that long are deleted."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from proxy.chat.history import HistoryStore
from proxy.chat.memory import MemoryHistory
from proxy.chat.redis_backend import HistoryUnavailable, RedisHistory
from proxy.settings import Settings, SettingsError

log = logging.getLogger(__name__)
DEFAULT_RETENTION_DAYS = 90.0


def retention_seconds(settings: Settings) -> float:
    raw = settings.env.get("MET_CHAT_RETENTION_DAYS") or ""
    if not raw:
        return DEFAULT_RETENTION_DAYS * 86_400.0
    try:
        days = float(raw)
    except ValueError:
        days = 0.0
    if not 0 < days <= 3650:
        raise SettingsError(f"Config 'MET_CHAT_RETENTION_DAYS' has value '{raw}'. "
                            "Not a number of days from 0 (excluded) to 3650.")
    return days * 86_400.0


async def build_history(settings: Settings, redis: aioredis.Redis | None) -> HistoryStore:
    retention = retention_seconds(settings)
    if redis is None:
        return MemoryHistory(retention)
    store = RedisHistory(redis, settings.redis_prefix, retention)
    try:
        await store.create_index()
    except HistoryUnavailable:  # start anyway: the index is created on first use
        log.warning("chat history index not created: Redis unreachable at start")
    return store
