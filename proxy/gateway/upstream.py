"""One pooled aiohttp session per provider, explicit timeouts; transport errors -> ProxyError."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from proxy.config.providers import Provider
from proxy.errors import UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable
from proxy.gateway.reliability import parse_retry_after

FORWARDED_REQUEST_HEADERS = frozenset({"openai-beta", "openai-organization", "openai-project"})
DRAIN_TIMEOUT_S = 900.0  # a replaced session outlives its longest stream by at most this
DRAIN_POLL_S = 0.1
log = logging.getLogger("meterline.upstream")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """One concrete place to send a request: provider + upstream model name + credential.
    Built once per chain and department (see Services.targets), so the request path finds its
    key, headers and URLs ready."""

    provider_name: str
    provider: Provider
    model: str
    credential: str | None
    credential_env: str | None = None  # where the credential came from: safe to log
    key: str = field(init=False)  # "provider/model": cooldowns and timeouts are kept per key
    headers: dict[str, str] = field(init=False, repr=False)  # sent on every request
    urls: dict[str, str] = field(init=False, repr=False)  # upstream path -> URL, filled on use

    def __post_init__(self) -> None:
        headers = {"content-type": "application/json", **self.provider.headers}
        if self.credential:
            if self.provider.kind == "azure":
                headers["api-key"] = self.credential
            else:
                headers["authorization"] = f"Bearer {self.credential}"
        object.__setattr__(self, "key", f"{self.provider_name}/{self.model}")
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "urls", {})

    def url(self, path: str) -> str:
        url = self.urls.get(path)
        if url is None:
            url = self.urls[path] = self.provider.url(path, self.model)
        return url


@dataclass(eq=False, slots=True)
class Pool:
    """One provider's session and the responses it has handed out (to drain it on reload)."""

    session: aiohttp.ClientSession
    opening: int = 0  # requests sent, headers not in yet
    responses: weakref.WeakSet[aiohttp.ClientResponse] = field(default_factory=weakref.WeakSet)

    def busy(self) -> int:
        """Requests still using the session: being sent, or a body not yet released."""
        return self.opening + sum(1 for resp in self.responses if not resp.closed)


class UpstreamClient:
    """Sessions are created lazily per provider inside the running loop and closed in lifespan.

    A reload that changes a provider retires its session: new requests get a new one, and the
    old one is closed once its last response is released (a stream in flight runs to its end),
    or after `drain_timeout_s` at most."""

    def __init__(self, providers: Mapping[str, Provider],
                 drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self._providers = dict(providers)
        self._pools: dict[str, Pool] = {}
        self._retired: dict[Pool, asyncio.Task[None]] = {}
        self.drain_timeout_s = drain_timeout_s

    @property
    def draining(self) -> int:
        """Retired sessions not closed yet."""
        return len(self._retired)

    def update_providers(self, providers: Mapping[str, Provider]) -> None:
        """On reload: sessions of changed or removed providers are drained and closed; the
        next request to such a provider opens a new session."""
        for name in list(self._pools):
            if providers.get(name) != self._providers.get(name):
                self._retire(self._pools.pop(name))
        self._providers = dict(providers)

    def _retire(self, pool: Pool) -> None:
        task = asyncio.get_running_loop().create_task(self._drain(pool))
        self._retired[pool] = task
        task.add_done_callback(lambda _: self._retired.pop(pool, None))

    async def _drain(self, pool: Pool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        while pool.busy() and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        left = [resp for resp in pool.responses if not resp.closed]
        if left:
            log.warning("closing a replaced provider session with %d responses still open "
                        "after %.0f s", len(left), self.drain_timeout_s)
        for resp in left:  # their readers get an error (closing the session alone hangs them)
            resp.close()
        await pool.session.close()

    def _pool(self, name: str, provider: Provider) -> Pool:
        pool = self._pools.get(name)
        if pool is None or pool.session.closed:
            connector = aiohttp.TCPConnector(
                limit=provider.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=provider.connect_timeout_s, sock_read=provider.timeout_s
                ),
                skip_auto_headers=("User-Agent",),
                json_serialize=None,  # type: ignore[arg-type]
            )
            pool = self._pools[name] = Pool(session)
        return pool

    async def open(
        self,
        target: UpstreamTarget,
        path: str,
        body: bytes,
        client_headers: Mapping[str, str],
    ) -> aiohttp.ClientResponse:
        """Send the request and return once the status line and headers are in.

        Error statuses are read, released and raised as UpstreamHTTPError so the caller can retry
        or fall back before anything reached the client.
        """
        headers = target.headers
        forwarded = FORWARDED_REQUEST_HEADERS.intersection(client_headers)
        if forwarded:
            headers = {**headers, **{name: client_headers[name] for name in forwarded}}
        pool = self._pools.get(target.provider_name)
        if pool is None or pool.session.closed:
            pool = self._pool(target.provider_name, target.provider)
        url = target.url(path)
        pool.opening += 1
        try:
            resp = await pool.session.post(url, data=body, headers=headers)
        except TimeoutError:
            raise UpstreamTimeout(f"Upstream {target.provider_name} timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"Upstream {target.provider_name} unreachable: {type(exc).__name__}"
            ) from None
        finally:
            pool.opening -= 1
        pool.responses.add(resp)
        if resp.status >= 400:
            try:
                data = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                data = b""
            finally:
                resp.release()
            raise UpstreamHTTPError(
                resp.status, data, parse_retry_after(resp.headers.get("retry-after"), time.time())
            )
        return resp

    async def read(self, target: UpstreamTarget, resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"Upstream {target.provider_name} timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"Upstream {target.provider_name} failed mid-response: {type(exc).__name__}"
            ) from None
        finally:
            resp.release()

    async def close(self) -> None:
        """At shutdown (in-flight requests have ended): close every session, retired ones too."""
        sessions = [pool.session for pool in self._pools.values()]
        self._pools = {}
        for pool, task in list(self._retired.items()):
            task.cancel()
            sessions.append(pool.session)
        await asyncio.gather(*self._retired.values(), return_exceptions=True)
        for session in sessions:
            await session.close()
