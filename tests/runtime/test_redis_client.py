"""The one Redis client factory (proxy/runtime/redis_client.py) on a real Redis Stack: a blocking
pool speaking RESP2 that hands out live connections even after Redis closed idle ones."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.runtime.redis_client import connect_redis

pytestmark = pytest.mark.redis


async def test_the_pool_is_blocking_bounded_and_resp2(redis_url: str) -> None:
    client = connect_redis(redis_url, max_connections=3, pool_wait_seconds=1.5,
                           timeout_seconds=0.75)
    try:
        pool = client.connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert pool.max_connections == 3 and pool.timeout == 1.5
        kwargs = pool.connection_kwargs
        assert (kwargs["protocol"], kwargs["socket_timeout"],
                kwargs["socket_connect_timeout"]) == (2, 0.75, 0.75)
        assert await client.ping() is True
        hello = await client.execute_command("HELLO")  # type: ignore[no-untyped-call]
        assert dict(zip(hello[::2], hello[1::2], strict=True))[b"proto"] == 2
    finally:
        await client.aclose()


async def test_a_full_pool_makes_callers_wait_then_fail(redis_url: str) -> None:
    client = connect_redis(redis_url, max_connections=1, pool_wait_seconds=0.3)
    try:
        held = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await client.ping()
        assert 0.25 <= time.monotonic() - started < 2.0
        await client.connection_pool.release(held)
        assert await client.ping() is True  # free again: served at once
    finally:
        await client.aclose()


async def test_connections_redis_closed_are_replaced_not_failed(redis_url: str) -> None:
    """After a Redis restart or failover every idle connection is dead; the next command on each
    must still succeed (the spend scripts can't be retried blindly)."""
    client = connect_redis(redis_url, max_connections=4)
    killer = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.gather(*(client.ping() for _ in range(4)))  # warm several connections
        name = f"victim-{time.monotonic_ns()}"
        await client.client_setname(name)
        killed = await killer.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed >= 1
        results = await asyncio.gather(*(client.set(f"t:rc:{i}", i) for i in range(4)))
        assert results == [True] * 4
        await client.delete(*(f"t:rc:{i}" for i in range(4)))
    finally:
        await client.aclose()
        await killer.aclose()
