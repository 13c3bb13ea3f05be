"""The SonarQube Web API client (proxy/mcp_sonarqube/sonarqube.py) against a tiny aiohttp
server: the request it sends, and one clear SonarQubeError per kind of failure, never carrying
the token."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.mcp_sonarqube.errors import SonarQubeError
from proxy.mcp_sonarqube.sonarqube import SonarQubeClient, error_text

TOKEN = "squ_very_secret"


class Api:
    """Answers every GET with `status`, `body` and `headers`; records what was asked."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query), dict(request.headers)))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body, headers=self.headers,
                            content_type="application/json")


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, str]]:
    fake = Api()
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def client(api: tuple[Api, str]) -> AsyncIterator[SonarQubeClient]:
    sonar = SonarQubeClient(api[1], TOKEN, timeout_s=0.5, organization="acme")
    yield sonar
    await sonar.close()


@pytest.mark.parametrize(("body", "text"), [
    (b'{"errors": [{"msg": "Project not found"}]}', "Project not found"),
    (b'{"errors": [{"msg": "a"}, {"msg": "b"}, "junk", {}]}', "a; b; "),
    (b'{"errors": []}', ""),
    (b'{"errors": "no"}', ""),
    (b"[]", ""),
    (b"<html>500</html>", ""),
    (b"", ""),
])
def test_error_text(body: bytes, text: str) -> None:
    assert error_text(body) == text


async def test_get_sends_the_token_as_a_bearer_header(api: tuple[Api, str],
                                                      client: SonarQubeClient) -> None:
    fake, _ = api
    fake.body = orjson.dumps({"component": {"key": "p"}})
    assert await client.get("api/x", {"a": "1", "n": 2}, subject="s") == {"component": {"key": "p"}}
    path, query, headers = fake.requests[0]
    assert (path, query) == ("/api/x", {"a": "1", "n": "2"})
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize(("status", "body", "headers", "outcome", "message"), [
    (401, b"", {}, "auth_failed", "rejected the token (401 Unauthorized). Set SONAR_TOKEN"),
    (403, b'{"errors": [{"msg": "Insufficient privileges"}]}', {}, "auth_failed",
     "SonarQube refused access to project 'p' (403 Forbidden): Insufficient privileges. The "
     "token's user needs the Browse permission on the project."),
    (404, b'{"errors": [{"msg": "Component key \'p\' not found"}]}', {}, "not_found",
     "SonarQube has no project 'p' (404): Component key 'p' not found. Use list_projects"),
    (429, b"", {"Retry-After": "30"}, "rate_limited",
     "SonarQube is rate limiting this token (429 Too Many Requests). Retry after 30 s."),
    (429, b"", {}, "rate_limited", "(429 Too Many Requests). Retry in a minute."),
    (502, b"<html>bad gateway</html>", {}, "unavailable",
     "failed on api/x with 502. The server may be down or restarting; try again later."),
    (400, b'{"errors": [{"msg": "Value of parameter \'ps\' must be less than 500"}]}', {},
     "invalid_input", "SonarQube rejected the request for project 'p' (400): Value of "
                      "parameter 'ps' must be less than 500."),
])
async def test_error_statuses(api: tuple[Api, str], client: SonarQubeClient, status: int,
                              body: bytes, headers: dict[str, str], outcome: str,
                              message: str) -> None:
    fake, _ = api
    fake.status, fake.body, fake.headers = status, body, headers
    with pytest.raises(SonarQubeError) as info:
        await client.get("api/x", {}, subject="project 'p'")
    assert info.value.outcome == outcome
    assert message in info.value.message
    assert TOKEN not in info.value.message


@pytest.mark.parametrize("body", [b"<html>login</html>", b"[1, 2]", b"null", b""])
async def test_an_answer_that_is_not_sonarqube_json(api: tuple[Api, str],
                                                    client: SonarQubeClient,
                                                    body: bytes) -> None:
    fake, url = api
    fake.body = body
    with pytest.raises(SonarQubeError) as info:
        await client.get("api/x", {}, subject="s")
    assert info.value.outcome == "sonarqube_error"
    assert info.value.message == (f"{url}/api/x did not answer with SonarQube JSON. Is "
                                  "SONAR_HOST_URL the base URL of SonarQube (without /api)?")


async def test_a_slow_server_is_a_timeout(api: tuple[Api, str], client: SonarQubeClient) -> None:
    fake, url = api
    fake.delay = 2.0
    with pytest.raises(SonarQubeError) as info:
        await client.get("api/x", {}, subject="s")
    assert info.value.outcome == "timeout"
    assert info.value.message == (f"SonarQube at {url} did not answer api/x within 0.5 s. It may "
                                  "be overloaded; try again, or raise SONAR_TIMEOUT_S.")


async def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sonar = SonarQubeClient(f"http://127.0.0.1:{port}", TOKEN, timeout_s=1.0)
    try:
        with pytest.raises(SonarQubeError) as info:
            await sonar.get("api/x", {}, subject="s")
    finally:
        await sonar.close()
    assert info.value.outcome == "unavailable"
    assert info.value.message.startswith(f"Cannot reach SonarQube at http://127.0.0.1:{port} (")
    assert TOKEN not in info.value.message


async def test_endpoints_ask_for_the_right_things(api: tuple[Api, str],
                                                  client: SonarQubeClient) -> None:
    fake, _ = api
    await client.measures("proj", ("bugs", "coverage"))
    await client.quality_gate("proj")
    await client.hotspot("AX-1")
    await client.rule("python:S1")
    await client.source_lines("proj:a.py", 3, 9)
    await client.search_projects("pay", 2, 50)
    await client.search_projects(None, 1, 10)
    asked: list[tuple[str, dict[str, Any]]] = [(path, query) for path, query, _ in fake.requests]
    assert asked == [
        ("/api/measures/component", {"component": "proj", "metricKeys": "bugs,coverage"}),
        ("/api/qualitygates/project_status", {"projectKey": "proj"}),
        ("/api/hotspots/show", {"hotspot": "AX-1"}),
        ("/api/rules/show", {"key": "python:S1"}),
        ("/api/sources/lines", {"key": "proj:a.py", "from": "3", "to": "9"}),
        ("/api/components/search", {"qualifiers": "TRK", "p": "2", "ps": "50", "q": "pay",
                                    "organization": "acme"}),
        ("/api/components/search", {"qualifiers": "TRK", "p": "1", "ps": "10",
                                    "organization": "acme"}),
    ]


async def test_a_404_names_what_was_asked_for(api: tuple[Api, str],
                                              client: SonarQubeClient) -> None:
    api[0].status = 404
    with pytest.raises(SonarQubeError, match="SonarQube has no hotspot 'AX-9' \\(404\\)"):
        await client.hotspot("AX-9")
    with pytest.raises(SonarQubeError, match="SonarQube has no source file 'p:f.py' \\(404\\)"):
        await client.source_lines("p:f.py", 1, 2)
