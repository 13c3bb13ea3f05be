"""A small client for the SonarQube / SonarCloud Web API: GET JSON, errors named clearly.

Only the endpoints the tools use are wrapped. Every failure becomes a :class:`SonarQubeError`
whose message names what to fix (token, project key, URL, timeout); the token is sent as a
bearer header and never appears in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from proxy.mcp_sonarqube.errors import SonarQubeError

Params = Mapping[str, str | int]


def error_text(body: bytes) -> str:
    """The messages of a SonarQube error body ``{"errors": [{"msg": ...}]}``, or ''."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return ""
    return "; ".join(str(e.get("msg", "")) for e in data["errors"] if isinstance(e, dict))


class SonarQubeClient:
    """GETs against ``base_url`` with the token; one aiohttp session, closed by :meth:`close`."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float,
                 organization: str | None = None) -> None:
        self.base_url = base_url
        self.organization = organization
        self._timeout_s = timeout_s
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def close(self) -> None:
        await self._session.close()

    async def get(self, path: str, params: Params, *, subject: str) -> dict[str, Any]:
        """GET ``api/...`` as JSON; ``subject`` names what was asked for (used in 404 errors)."""
        url = f"{self.base_url}/{path}"
        try:
            async with self._session.get(url, params=dict(params)) as response:
                body = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise SonarQubeError("timeout", (
                f"SonarQube at {self.base_url} did not answer {path} within {self._timeout_s:g} s. "
                "It may be overloaded; try again, or raise SONAR_TIMEOUT_S.")) from None
        except aiohttp.ClientError as exc:
            raise SonarQubeError("unavailable", (
                f"Cannot reach SonarQube at {self.base_url} ({type(exc).__name__}). Check "
                "SONAR_HOST_URL and that the server is up.")) from None
        if status >= 400:
            raise self._status_error(status, path, error_text(body), subject, retry_after)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise SonarQubeError("sonarqube_error", (
                f"{self.base_url}/{path} did not answer with SonarQube JSON. Is SONAR_HOST_URL "
                "the base URL of SonarQube (without /api)?"))
        return data

    def _status_error(self, status: int, path: str, detail: str, subject: str,
                      retry_after: str | None) -> SonarQubeError:
        said = f": {detail}" if detail else ""
        if status == 401:
            return SonarQubeError("auth_failed", (
                f"SonarQube at {self.base_url} rejected the token (401 Unauthorized). Set "
                "SONAR_TOKEN to a valid user token (My Account > Security) and restart the "
                "MCP server."))
        if status == 403:
            return SonarQubeError("auth_failed", (
                f"SonarQube refused access to {subject} (403 Forbidden){said}. The token's user "
                "needs the Browse permission on the project."))
        if status == 404:
            return SonarQubeError("not_found", (
                f"SonarQube has no {subject} (404){said}. Use list_projects to find project "
                "keys, or find_security_issues for issue keys."))
        if status == 429:
            wait = f" Retry after {retry_after} s." if retry_after else " Retry in a minute."
            return SonarQubeError("rate_limited", (
                f"SonarQube is rate limiting this token (429 Too Many Requests).{wait}"))
        if status >= 500:
            return SonarQubeError("unavailable", (
                f"SonarQube at {self.base_url} failed on {path} with {status}{said}. The server "
                "may be down or restarting; try again later."))
        return SonarQubeError("invalid_input", (
            f"SonarQube rejected the request for {subject} ({status}){said}."))

    def _org(self, params: dict[str, str | int]) -> dict[str, str | int]:
        if self.organization:
            params["organization"] = self.organization
        return params

    # -- the endpoints the tools use ---------------------------------------------------------

    async def measures(self, project_key: str, metric_keys: tuple[str, ...]) -> dict[str, Any]:
        return await self.get("api/measures/component", {
            "component": project_key, "metricKeys": ",".join(metric_keys)},
            subject=f"project '{project_key}'")

    async def quality_gate(self, project_key: str) -> dict[str, Any]:
        return await self.get("api/qualitygates/project_status", {"projectKey": project_key},
                              subject=f"project '{project_key}'")

    async def search_issues(self, params: Params, *, subject: str) -> dict[str, Any]:
        return await self.get("api/issues/search", params, subject=subject)

    async def search_hotspots(self, params: Params, *, subject: str) -> dict[str, Any]:
        return await self.get("api/hotspots/search", params, subject=subject)

    async def hotspot(self, key: str) -> dict[str, Any]:
        return await self.get("api/hotspots/show", {"hotspot": key},
                              subject=f"hotspot '{key}'")

    async def rule(self, rule_key: str) -> dict[str, Any]:
        return await self.get("api/rules/show", {"key": rule_key}, subject=f"rule '{rule_key}'")

    async def source_lines(self, component: str, first: int, last: int) -> dict[str, Any]:
        return await self.get("api/sources/lines", {"key": component, "from": first, "to": last},
                              subject=f"source file '{component}'")

    async def search_projects(self, query: str | None, page: int, page_size: int
                              ) -> dict[str, Any]:
        params: dict[str, str | int] = {"qualifiers": "TRK", "p": page, "ps": page_size}
        if query:
            params["q"] = query
        return await self.get("api/components/search", self._org(params), subject="projects")
