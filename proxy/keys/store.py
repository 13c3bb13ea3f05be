"""Inbound API keys -> Principal (department, user). Keys are stored only as sha256 hashes.

Two owners (docs/spend.md, "Who owns a key"):
- config keys (keys.yaml, MET_ADMIN_KEY, the demo keys under --demo) are owned by the config.
  Each process holds them in memory and `configure` swaps them in at start and on reload, so a
  key removed from the config stops working, and a Redis that restarted empty changes nothing.
  They are never written to Redis; only what the admin API did to one (disabled, expired by a
  rotation) is kept there, by hash, as a `KeyState`, and is dropped once the key leaves the config.
- API keys (`POST /admin/keys`, rotation replacements) are owned by the store: Redis or memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.config.errors import load_model
from proxy.errors import ServiceUnavailable

log = logging.getLogger(__name__)

DEMO_DEPARTMENTS = ("engineering", "sales", "marketing", "executive")
DEMO_ADMIN_KEY = "sk-demo-admin"  # published in the README; exists only under --demo
LOOKUP_CACHE_S = (
    5.0  # how long a replica trusts a Redis key lookup (disable/rotate propagate within this)
)


KeySource = Literal["config", "api"]


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
    source: KeySource = "api"

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
    """The config's keys: keys.yaml, then MET_ADMIN_KEY, then (--demo only) the demo keys."""
    records = [
        KeyRecord(e.id, e.sha256, e.department, e.user, e.admin, 0.0, e.expires_at,
                  source="config")
        for e in config.keys
    ]
    if admin_key:
        records.append(KeyRecord("env-admin", hash_key(admin_key), None, admin=True,
                                 source="config"))
    if demo:
        records += [KeyRecord(f"demo-{d}", hash_key(f"sk-demo-{d}"), d, source="config")
                    for d in DEMO_DEPARTMENTS]
        records.append(KeyRecord("demo-admin", hash_key(DEMO_ADMIN_KEY), None, admin=True,
                                 source="config"))
    return records


class KeyStore(Protocol):
    async def configure(self, records: list[KeyRecord]) -> None:
        """Swap in the config's keys (start and reload); drop state of keys it no longer has."""
    async def authenticate(self, raw: str) -> Principal | None: ...
    async def put(self, record: KeyRecord) -> None: ...
    async def get(self, key_id: str) -> KeyRecord | None: ...
    async def list(self) -> list[KeyRecord]: ...


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the admin API changed on a config key: kept while the key stays in the config."""

    disabled: bool = False
    expires_at: float | None = None

    def applied(self, record: KeyRecord) -> KeyRecord:
        expires = record.expires_at
        if self.expires_at is not None:
            expires = self.expires_at if expires is None else min(expires, self.expires_at)
        return replace(record, disabled=record.disabled or self.disabled, expires_at=expires)

    @classmethod
    def of(cls, changed: KeyRecord, configured: KeyRecord) -> KeyState:
        expires = None if changed.expires_at == configured.expires_at else changed.expires_at
        return cls(changed.disabled, expires)


class ConfigKeys:
    """The config's keys by hash and by id (the first id wins, as in the admin API)."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self.by_hash = {r.sha256: r for r in records}
        self.by_id: dict[str, KeyRecord] = {}
        for record in records:
            self.by_id.setdefault(record.id, record)


def stale_config_record(record: KeyRecord) -> bool:
    """A record that start-up wrote into Redis before config keys were reconciled (config keys
    had created_at 0; API keys always carry their creation time): never honoured, and deleted
    by `configure`."""
    return record.source == "config" or record.created_at == 0.0


def principal_of(record: KeyRecord | None, now: float) -> Principal | None:
    if record is None or not record.usable(now):
        return None
    return Principal(record.id, record.department, record.user, record.admin)


class MemoryKeyStore:
    """In-process keys for the embedded mode."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self._config = ConfigKeys([])
        self._states: dict[str, KeyState] = {}
        self._by_hash: dict[str, KeyRecord] = {}  # API keys
        self._by_id: dict[str, KeyRecord] = {}
        self._apply(records)

    async def configure(self, records: list[KeyRecord]) -> None:
        self._apply(records)

    def _apply(self, records: list[KeyRecord]) -> None:
        self._config = ConfigKeys(records)
        self._states = {sha: s for sha, s in self._states.items() if sha in self._config.by_hash}

    def _effective(self, record: KeyRecord) -> KeyRecord:
        state = self._states.get(record.sha256)
        return record if state is None else state.applied(record)

    async def authenticate(self, raw: str) -> Principal | None:
        sha = hash_key(raw)
        configured = self._config.by_hash.get(sha)
        record = self._effective(configured) if configured else self._by_hash.get(sha)
        return principal_of(record, time.time())

    async def put(self, record: KeyRecord) -> None:
        if record.source == "config":
            configured = self._config.by_hash.get(record.sha256)
            if configured is not None:
                self._states[record.sha256] = KeyState.of(record, configured)
            return
        self._by_hash[record.sha256] = record
        self._by_id[record.id] = record

    async def get(self, key_id: str) -> KeyRecord | None:
        configured = self._config.by_id.get(key_id)
        return self._effective(configured) if configured else self._by_id.get(key_id)

    async def list(self) -> list[KeyRecord]:
        configured = [self._effective(r) for r in self._config.by_id.values()]
        api = [r for r in self._by_id.values() if r.id not in self._config.by_id]
        return sorted(configured + api, key=lambda r: r.id)


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
    """API keys shared by every replica, plus the admin API's changes to config keys; the config
    keys themselves come from this process's config (see the module docstring). While Redis is
    unreachable, lookups the local cache can't answer raise KeyStoreUnavailable: a revocation
    can't be checked."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._states = f"{prefix}keystate"  # hash: config key sha256 -> KeyState
        self._ids = f"{prefix}keyids"  # hash: API key id -> sha256
        self._config = ConfigKeys([])
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    def _hkey(self, sha: str) -> str:
        return f"{self._prefix}key:{sha}"

    async def configure(self, records: list[KeyRecord]) -> None:
        """Swap in the config's keys, then drop what Redis holds for keys the config no longer
        has. The swap needs no Redis; the clean-up is retried on the next start or reload."""
        self._config = ConfigKeys(records)
        self._cache.clear()
        try:
            with _reachable():
                await self._reconcile()
        except KeyStoreUnavailable:
            log.warning("key store unreachable: stale key state is cleaned on the next reload")

    async def _reconcile(self) -> None:
        shas = [_text(s) for s in await self._r.hkeys(self._states)]
        gone = [sha for sha in shas if sha not in self._config.by_hash]
        if gone:
            await self._r.hdel(self._states, *gone)
        ids = {_text(k): _text(v) for k, v in (await self._r.hgetall(self._ids)).items()}
        if not ids:
            return
        blobs = await self._r.mget([self._hkey(sha) for sha in ids.values()])
        stale = [(key_id, sha) for (key_id, sha), blob in zip(ids.items(), blobs, strict=True)
                 if blob is None or stale_config_record(_record(blob))]
        if stale:
            pipe = self._r.pipeline(transaction=True)
            pipe.hdel(self._ids, *(key_id for key_id, _ in stale))
            pipe.delete(*(self._hkey(sha) for _, sha in stale))
            await pipe.execute()

    async def authenticate(self, raw: str) -> Principal | None:
        sha = hash_key(raw)
        now = time.time()
        hit = self._cache.get(sha)
        if hit is not None and hit[0] > now:
            return principal_of(hit[1], now)
        with _reachable():
            record = await self._lookup(sha)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[sha] = (now + LOOKUP_CACHE_S, record)
        return principal_of(record, now)

    async def _lookup(self, sha: str) -> KeyRecord | None:
        configured = self._config.by_hash.get(sha)
        if configured is not None:
            return _with_state(configured, await self._r.hget(self._states, sha))
        blob = await self._r.get(self._hkey(sha))
        record = _record(blob) if blob else None
        return None if record is None or stale_config_record(record) else record

    async def put(self, record: KeyRecord) -> None:
        if record.source == "config":
            configured = self._config.by_hash.get(record.sha256)
            if configured is None:
                return
            state = KeyState.of(record, configured)
            with _reachable():
                await self._r.hset(self._states, record.sha256, orjson.dumps(asdict(state)))
        else:
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._hkey(record.sha256), orjson.dumps(asdict(record)))
            pipe.hset(self._ids, record.id, record.sha256)
            with _reachable():
                await pipe.execute()
        self._cache.pop(record.sha256, None)

    async def get(self, key_id: str) -> KeyRecord | None:
        configured = self._config.by_id.get(key_id)
        with _reachable():
            if configured is not None:
                return _with_state(configured, await self._r.hget(self._states,
                                                                  configured.sha256))
            sha = await self._r.hget(self._ids, key_id)
            if sha is None:
                return None
            blob = await self._r.get(self._hkey(_text(sha)))
        record = _record(blob) if blob else None
        return None if record is None or stale_config_record(record) else record

    async def list(self) -> list[KeyRecord]:
        configured = list(self._config.by_id.values())
        with _reachable():
            states = (await self._r.hmget(self._states, [r.sha256 for r in configured])
                      if configured else [])
            shas = await self._r.hvals(self._ids)
            blobs = await self._r.mget([self._hkey(_text(s)) for s in shas]) if shas else []
        records = [_with_state(r, s) for r, s in zip(configured, states, strict=True)]
        api = (_record(b) for b in blobs if b)
        records += [r for r in api
                    if not stale_config_record(r) and r.id not in self._config.by_id]
        return sorted(records, key=lambda r: r.id)


def _record(blob: bytes | str) -> KeyRecord:
    return KeyRecord(**orjson.loads(blob))


def _with_state(record: KeyRecord, blob: bytes | str | None) -> KeyRecord:
    return KeyState(**orjson.loads(blob)).applied(record) if blob else record


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
