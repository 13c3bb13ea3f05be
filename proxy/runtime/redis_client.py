"""The one Redis client factory: a process's keys, spend and cache share one pool built here.
State may live on a Redis Cluster (MET_REDIS_CLUSTER=1); the cache's vector index never does
(open-source RediSearch does not span shards), so it can have a Redis Stack of its own
(REDIS_CACHE_URL)."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ClusterError

RedisClient: TypeAlias = aioredis.Redis | RedisCluster


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


class GatedCluster(RedisCluster):
    """A RedisCluster whose callers wait for one of `max_connections` slots, as they do for
    connect_redis's blocking pool: redis-py's cluster pools don't wait, they raise
    MaxConnectionsError once a node has max_connections in use (a burst of 500 requests on one
    replica turned into 503s). An operation (command, script or pipeline) holds at most one
    connection per node, so the gate also bounds every node's pool.

    A command on several keys of a slot being migrated gets TRYAGAIN while its keys are split
    between two masters; redis-py tries 16 times (about 0.4 s) and then raises "TTL exhausted".
    Every one of those tries was refused before it ran (TRYAGAIN, ASK and MOVED), so the command
    is sent again, with a growing pause, for up to `migration_wait_seconds`."""

    def __init__(self, *args: Any, pool_wait_seconds: float = 10.0,
                 migration_wait_seconds: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Semaphore(kwargs.get("max_connections", 64))
        self.pool_wait_seconds = pool_wait_seconds
        self.migration_wait_seconds = migration_wait_seconds

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(self.pool_wait_seconds):
            await self.gate.acquire()
        try:
            give_up = asyncio.get_running_loop().time() + self.migration_wait_seconds
            pause = 0.02
            while True:
                try:
                    return await super().execute_command(*args, **kwargs)
                except ClusterError as exc:
                    if str(exc) != "TTL exhausted." or asyncio.get_running_loop().time() > give_up:
                        raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
        finally:
            self.gate.release()

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py's does
        # redis-py's typing marks an attribute abstract; its own pipeline() builds the same
        return GatedPipeline(self, transaction)  # type: ignore[abstract]


class GatedPipeline(ClusterPipeline):
    def __init__(self, client: GatedCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self.gated = client

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(self.gated.pool_wait_seconds):
            await self.gated.gate.acquire()
        try:
            return await super().execute(*args, **kwargs)
        finally:
            self.gated.gate.release()


def connect_cluster(url: str, *, max_connections: int = 64, pool_wait_seconds: float = 10.0,
                    timeout_seconds: float = 2.0) -> RedisCluster:
    """A cluster client from any one node's URL: it learns the slot map, follows MOVED/ASK, and
    after a master fails re-reads the map (the replica promoted in its place). RESP2 for the
    reason connect_redis gives."""
    return GatedCluster.from_url(
        url,
        protocol=2,
        max_connections=max_connections,
        pool_wait_seconds=pool_wait_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
    )


def connect_state(url: str, cluster: bool, *, max_connections: int = 64,
                  pool_wait_seconds: float = 10.0, timeout_seconds: float = 2.0) -> RedisClient:
    if cluster:
        return connect_cluster(url, max_connections=max_connections,
                               pool_wait_seconds=pool_wait_seconds,
                               timeout_seconds=timeout_seconds)
    return connect_redis(url, max_connections=max_connections,
                         pool_wait_seconds=pool_wait_seconds, timeout_seconds=timeout_seconds)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)
