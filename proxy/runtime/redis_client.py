"""The one Redis client factory: a process's keys, spend and cache share one pool built here."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect_redis(url: str, *, max_connections: int = 64, pool_wait_seconds: float = 10.0,
                  timeout_seconds: float = 2.0) -> aioredis.Redis:
    """A blocking pool (requests wait for a free connection rather than open without bound)
    speaking RESP2: redis-py 8's RESP3 pools skip their check for connections Redis has closed,
    so after a Redis restart or failover the first command on each idle connection failed. A
    client-side retry would cover idempotent reads only; the spend scripts are not idempotent,
    so the pool has to hand out live connections instead."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        protocol=2,
        max_connections=max_connections,
        timeout=pool_wait_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
    )
    return aioredis.Redis.from_pool(pool)
