"""Inbound API keys -> Principal (department, user). Keys are stored only as sha256 hashes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.config.errors import load_model
from proxy.errors import ServiceUnavailable

log = logging.getLogger(__name__)

DEMO_DEPARTMENTS = ("engineering", "sales", "marketing", "executive")
LOOKUP_CACHE_S = (
    5.0  # how long a replica trusts a Redis key lookup (disable/rotate propagate within this)
)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_raw_key() -> str:
    return "sk-ml-" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    sha256: str
    department: str | None  # None for admin keys
    user: str | None = None
    admin: bool = False
    created_at: float = 0.0
    expires_at: float | None = None
    disabled: bool = False

    def usable(self, now: float) -> bool:
        return not self.disabled and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, object]:
        data = asdict(self)
        data["sha256"] = self.sha256[:12] + "…"
        return data


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Principal:
    key_id: str
    department: str | None
    user: str | None
    admin: bool


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    department: str | None = None
    user: str | None = None
    admin: bool = False
    expires_at: float | None = None


class KeysConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: tuple[KeyEntry, ...] = ()


def load_keys(path: Path) -> KeysConfig:
    return load_model(KeysConfig, path) if path.exists() else KeysConfig()


def records_from_config(config: KeysConfig, demo: bool, admin_key: str | None) -> list[KeyRecord]:
    records = [
        KeyRecord(e.id, e.sha256, e.department, e.user, e.admin, 0.0, e.expires_at)
        for e in config.keys
    ]
    if admin_key:
        records.append(KeyRecord("env-admin", hash_key(admin_key), None, admin=True))
    if demo:
        records += [KeyRecord(f"demo-{d}", hash_key(f"sk-demo-{d}"), d) for d in DEMO_DEPARTMENTS]
        records.append(KeyRecord("demo-admin", hash_key("sk-demo-admin"), None, admin=True))
    return records


class KeyStore(Protocol):
    async def authenticate(self, raw: str) -> Principal | None: ...
    async def put(self, record: KeyRecord) -> None: ...
    async def get(self, key_id: str) -> KeyRecord | None: ...
    async def list(self) -> list[KeyRecord]: ...


def principal_of(record: KeyRecord | None, now: float) -> Principal | None:
    if record is None or not record.usable(now):
        return None
    return Principal(record.id, record.department, record.user, record.admin)


class MemoryKeyStore:
    """In-process keys for the embedded mode."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self._by_hash = {r.sha256: r for r in records}
        self._by_id = {r.id: r for r in records}

    async def authenticate(self, raw: str) -> Principal | None:
        return principal_of(self._by_hash.get(hash_key(raw)), time.time())

    async def put(self, record: KeyRecord) -> None:
        self._by_hash[record.sha256] = record
        self._by_id[record.id] = record

    async def get(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    async def list(self) -> list[KeyRecord]:
        return sorted(self._by_id.values(), key=lambda r: r.id)


class KeyStoreUnavailable(ServiceUnavailable):
    """Redis holds the keys and is unreachable: the key can't be checked (-> HTTP 503)."""

    code = "key_store_unavailable"


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.warning("key store unreachable: %s", exc)
        raise KeyStoreUnavailable("The key store is unreachable; retry shortly.") from exc


class RedisKeyStore:
    """Keys shared by every replica: config keys written at start, admin-made keys persist.
    While Redis is unreachable, lookups the local cache can't answer raise KeyStoreUnavailable."""

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    def _hkey(self, sha: str) -> str:
        return f"{self._prefix}key:{sha}"

    async def seed(self, records: list[KeyRecord]) -> None:
        for record in records:
            await self.put(record)

    async def authenticate(self, raw: str) -> Principal | None:
        sha = hash_key(raw)
        now = time.time()
        hit = self._cache.get(sha)
        if hit is not None and hit[0] > now:
            return principal_of(hit[1], now)
        with _reachable():
            blob = await self._r.get(self._hkey(sha))
        record = KeyRecord(**orjson.loads(blob)) if blob else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[sha] = (now + LOOKUP_CACHE_S, record)
        return principal_of(record, now)

    async def put(self, record: KeyRecord) -> None:
        # the record and the id index are in different slots on a cluster: one pipeline there
        pipe = self._r.pipeline(transaction=not isinstance(self._r, RedisCluster))
        pipe.set(self._hkey(record.sha256), orjson.dumps(asdict(record)))
        pipe.hset(f"{self._prefix}keyids", record.id, record.sha256)
        with _reachable():
            await pipe.execute()
        self._cache.pop(record.sha256, None)

    async def get(self, key_id: str) -> KeyRecord | None:
        with _reachable():
            sha = await self._r.hget(f"{self._prefix}keyids", key_id)
            if sha is None:
                return None
            blob = await self._r.get(self._hkey(_text(sha)))
        return KeyRecord(**orjson.loads(blob)) if blob else None

    async def list(self) -> list[KeyRecord]:
        with _reachable():
            shas = await self._r.hvals(f"{self._prefix}keyids")
            keys = [self._hkey(_text(s)) for s in shas]
            blobs = (await self._r.mget_nonatomic(keys) if isinstance(self._r, RedisCluster)
                     else await self._r.mget(keys)) if keys else []
        return sorted((KeyRecord(**orjson.loads(b)) for b in blobs if b), key=lambda r: r.id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def create_key(
    store: KeyStore,
    department: str | None,
    *,
    user: str | None = None,
    admin: bool = False,
    expires_at: float | None = None,
    key_id: str | None = None,
) -> tuple[str, KeyRecord]:
    """A new key: the raw value is returned once and never stored."""
    raw = new_raw_key()
    record = KeyRecord(
        key_id or "key-" + secrets.token_hex(6),
        hash_key(raw),
        department,
        user,
        admin,
        time.time(),
        expires_at,
    )
    await store.put(record)
    return raw, record


async def rotate_key(store: KeyStore, key_id: str, grace_s: float) -> tuple[str, KeyRecord] | None:
    """Issue a replacement; the old key keeps working for grace_s seconds, then expires."""
    old = await store.get(key_id)
    if old is None:
        return None
    now = time.time()
    await store.put(replace(old, expires_at=now + grace_s if grace_s > 0 else now))
    return await create_key(
        store, old.department, user=old.user, admin=old.admin, expires_at=old.expires_at
    )


async def disable_key(store: KeyStore, key_id: str) -> KeyRecord | None:
    old = await store.get(key_id)
    if old is None:
        return None
    new = replace(old, disabled=True)
    await store.put(new)
    return new
