"""Inbound keys on both backends: hashed storage, departments, rotation grace, disable, expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from proxy.keys.store import (
    KeyEntry,
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
from tests.conftest import delete_redis_prefix


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
    assert admin == [KeyRecord("env-admin", hash_key("sk-op"), None, admin=True,
                               source="config")]


# ----- config keys: owned by keys.yaml (and MET_ADMIN_KEY, and --demo), reconciled ------------

def config_keys(*entries: tuple[str, str, str | None], admin_key: str | None = None,
                demo: bool = False) -> list[KeyRecord]:
    """(id, raw key, department or None for an admin key) -> what the proxy builds from config."""
    keys = tuple(KeyEntry(id=key_id, sha256=hash_key(raw), department=dept, admin=dept is None)
                 for key_id, raw, dept in entries)
    return records_from_config(KeysConfig(keys=keys), demo=demo, admin_key=admin_key)


def stored_names(redis_url: str, prefix: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        return sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*"))
    finally:
        client.close()


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)],
                         indirect=True)
async def test_reconfigure_drops_removed_keys_and_keeps_api_disables(store: KeyStore) -> None:
    await store.configure(config_keys(("a", "sk-a", "sales"), ("b", "sk-b", "sales")))
    assert await store.authenticate("sk-b") is not None
    assert await disable_key(store, "a") is not None
    api_raw, _ = await create_key(store, "sales")
    await store.configure(config_keys(("a", "sk-a", "sales")))  # b removed; a is still listed
    assert await store.authenticate("sk-b") is None
    assert await store.get("b") is None
    assert await store.authenticate("sk-a") is None  # disabled through the API: stays disabled
    assert await store.authenticate(api_raw) is not None  # API-made keys belong to the store
    sources = {r.id: (r.source, r.disabled) for r in await store.list()}
    assert sources.pop("a") == ("config", True)
    assert list(sources.values()) == [("api", False)]


@pytest.mark.redis
async def test_a_restarted_replica_honours_only_its_own_config(redis_url: str,
                                                               redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        before = RedisKeyStore(client, redis_prefix)
        await before.configure(config_keys(("a", "sk-a", "sales"), ("b", "sk-b", "sales"),
                                           admin_key="sk-admin-old", demo=True))
        after = RedisKeyStore(client, redis_prefix)  # same Redis, new config and MET_ADMIN_KEY
        await after.configure(config_keys(("a", "sk-a", "sales"), admin_key="sk-admin-new"))
        assert await after.authenticate("sk-a") is not None
        for gone in ("sk-b", "sk-admin-old", "sk-demo-admin", "sk-demo-sales"):
            assert await after.authenticate(gone) is None, gone
        admin = await after.authenticate("sk-admin-new")
        assert admin is not None and admin.admin
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_keys_the_old_seed_wrote_to_redis_are_removed(redis_url: str,
                                                            redis_prefix: str) -> None:
    """Before config keys were reconciled, start-up wrote every config key (demo and
    MET_ADMIN_KEY too) into Redis as a plain record with created_at 0; those must not work."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        legacy = KeyRecord("demo-admin", hash_key("sk-demo-admin"), None, admin=True)
        blob = orjson.dumps({k: v for k, v in asdict(legacy).items() if k != "source"})
        await client.set(f"{redis_prefix}key:{legacy.sha256}", blob)
        await client.hset(f"{redis_prefix}keyids", legacy.id, legacy.sha256)
        store = RedisKeyStore(client, redis_prefix)
        assert await store.authenticate("sk-demo-admin") is None
        await store.configure(config_keys(("a", "sk-a", "sales")))
        assert await client.exists(f"{redis_prefix}key:{legacy.sha256}") == 0
        assert [r.id for r in await store.list()] == ["a"]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_config_keys_work_whatever_redis_holds(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisKeyStore(client, redis_prefix)
        await store.configure(config_keys(("a", "sk-a", "sales"), admin_key="sk-admin",
                                          demo=True))
        assert stored_names(redis_url, redis_prefix) == []  # config and demo keys stay out
        api_raw, _ = await create_key(store, "sales")
        delete_redis_prefix(redis_url, redis_prefix)  # Redis restarted empty / flushed
        store._cache.clear()
        for raw in ("sk-a", "sk-admin", "sk-demo-sales"):
            assert await store.authenticate(raw) is not None, raw
        assert await store.authenticate(api_raw) is None  # owned by Redis: gone with it
    finally:
        await client.aclose()
