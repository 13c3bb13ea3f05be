"""One pooled aiohttp session per provider, explicit timeouts; transport errors -> ProxyError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from proxy.config.providers import Provider
from proxy.errors import UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable
from proxy.gateway.reliability import parse_retry_after

FORWARDED_REQUEST_HEADERS = frozenset({"openai-beta", "openai-organization", "openai-project"})


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


class UpstreamClient:
    """Sessions are created lazily per provider inside the running loop and closed in lifespan."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def update_providers(self, providers: Mapping[str, Provider]) -> None:
        """On reload: sessions of changed providers are rebuilt on next use."""
        for name, provider in providers.items():
            if self._providers.get(name) != provider and name in self._sessions:
                session = self._sessions.pop(name)
                asyncio.get_running_loop().create_task(session.close())
        self._providers = dict(providers)

    def _session(self, name: str, provider: Provider) -> aiohttp.ClientSession:
        session = self._sessions.get(name)
        if session is None or session.closed:
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
            self._sessions[name] = session
        return session

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
        session = self._sessions.get(target.provider_name)
        if session is None or session.closed:
            session = self._session(target.provider_name, target.provider)
        url = target.url(path)
        try:
            resp = await session.post(url, data=body, headers=headers)
        except TimeoutError:
            raise UpstreamTimeout(f"Upstream {target.provider_name} timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"Upstream {target.provider_name} unreachable: {type(exc).__name__}"
            ) from None
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
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
