"""Inbound keys on both backends: hashed storage, departments, rotation grace, disable, expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from proxy.keys.store import (
    KeyRecord,
    KeysConfig,
    KeyStore,
    MemoryKeyStore,
    RedisKeyStore,
    create_key,
    disable_key,
    hash_key,
    records_from_config,
    rotate_key,
)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KeyStore]:
    if request.param == "memory":
        yield MemoryKeyStore([])
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    client = aioredis.Redis.from_url(url)
    yield RedisKeyStore(client, prefix)
    await client.aclose()


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)],
                         indirect=True)
async def test_create_authenticate_and_never_store_raw(store: KeyStore) -> None:
    raw, record = await create_key(store, "sales", user="ana")
    principal = await store.authenticate(raw)
    assert principal is not None
    assert (principal.department, principal.user, principal.admin) == ("sales", "ana", False)
    assert record.sha256 == hash_key(raw) and raw not in repr(await store.list())
    assert await store.authenticate(raw + "x") is None


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)],
                         indirect=True)
async def test_rotation_keeps_old_key_during_grace(store: KeyStore) -> None:
    old_raw, old = await create_key(store, "engineering")
    rotated = await rotate_key(store, old.id, grace_s=60)
    assert rotated is not None
    new_raw, new = rotated
    if isinstance(store, RedisKeyStore):
        store._cache.clear()  # this replica's 5 s lookup cache; other replicas see it after 5 s
    assert await store.authenticate(old_raw) is not None
    assert await store.authenticate(new_raw) is not None
    assert new.id != old.id and new.department == "engineering"
    expired = await rotate_key(store, new.id, grace_s=0)
    assert expired is not None
    if isinstance(store, RedisKeyStore):
        store._cache.clear()
    assert await store.authenticate(new_raw) is None


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)],
                         indirect=True)
async def test_disable_and_expiry(store: KeyStore) -> None:
    raw, record = await create_key(store, "marketing")
    await disable_key(store, record.id)
    if isinstance(store, RedisKeyStore):
        store._cache.clear()
    assert await store.authenticate(raw) is None
    raw2, _ = await create_key(store, "marketing", expires_at=time.time() - 1)
    assert await store.authenticate(raw2) is None
    assert await disable_key(store, "no-such-key") is None


def test_demo_keys_only_in_demo_mode() -> None:
    assert records_from_config(KeysConfig(), demo=False, admin_key=None) == []
    demo = records_from_config(KeysConfig(), demo=True, admin_key=None)
    by_hash = {r.sha256: r for r in demo}
    assert by_hash[hash_key("sk-demo-sales")].department == "sales"
    assert by_hash[hash_key("sk-demo-admin")].admin is True
    admin = records_from_config(KeysConfig(), demo=False, admin_key="sk-op")
    assert admin == [KeyRecord("env-admin", hash_key("sk-op"), None, admin=True)]
