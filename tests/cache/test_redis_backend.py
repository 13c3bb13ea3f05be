"""The Redis Stack cache backend as several replicas start it at once."""

from __future__ import annotations

import asyncio

import pytest

from proxy.cache.embedder import MINILM_DIM
from proxy.cache.redis_backend import RedisBackend
from proxy.runtime.redis_client import connect_redis

pytestmark = pytest.mark.redis


async def test_replicas_starting_together_share_one_index(redis_url: str,
                                                           redis_prefix: str) -> None:
    """Each replica checks for the index and creates it when missing: two doing that at once
    must both start (the loser of the race used to fail with 'Index already exists')."""
    clients = [connect_redis(redis_url) for _ in range(4)]
    try:
        backends = [RedisBackend(c, redis_prefix, MINILM_DIM) for c in clients]
        await asyncio.gather(*(b.start() for b in backends))
        assert await backends[0].index.exists()
    finally:
        for client in clients:
            await client.aclose()
