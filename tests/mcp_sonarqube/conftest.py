"""Fixtures for the SonarQube MCP server: the Web API stand-in, and MCP client sessions to a
real `python -m proxy mcp sonarqube` subprocess over stdio or streamable HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.servers import REPO_ROOT, ServerThread, free_port
from tests.support.sonarqube_standin import SonarQubeStandin

Transport = str  # "stdio" | "streamable-http"


@pytest.fixture
def sonar_token() -> str:
    return "squ_" + uuid.uuid4().hex


@pytest.fixture
def sonar(sonar_token: str) -> Iterator[tuple[SonarQubeStandin, str]]:
    """The stand-in and its base URL."""
    standin = SonarQubeStandin(sonar_token)
    server = ServerThread(standin.app).start()
    yield standin, server.url
    server.stop()


def server_env(sonar_url: str, token: str, **extra: str) -> dict[str, str]:
    """Environment for the MCP subprocess: this checkout first on the path, a short timeout."""
    return {"PYTHONPATH": str(REPO_ROOT), "SONAR_HOST_URL": sonar_url, "SONAR_TOKEN": token,
            "SONAR_TIMEOUT_S": "1", "MET_LOG_LEVEL": "debug", **extra}


class ServerLog:
    """Where the subprocess's stderr goes; read it after the session closed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")


@pytest.fixture
def server_log(tmp_path: Path) -> ServerLog:
    return ServerLog(tmp_path / "mcp-server.stderr")


@asynccontextmanager
async def stdio_session(env: dict[str, str], log: ServerLog, *args: str
                        ) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "proxy", "mcp", "sonarqube", *args],
                                   env=env, cwd=str(REPO_ROOT))
    with log.path.open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def start_http_server(env: dict[str, str], log: ServerLog) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.path.open("ab") as errlog:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "mcp", "sonarqube", "--transport", "streamable-http",
             "--port", str(port)], env={**os.environ, **env}, cwd=REPO_ROOT,
            stdout=errlog, stderr=errlog)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"MCP server exited {process.returncode}:\n{log.text()}")
        try:
            if httpx.get(f"{base}/metrics", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"MCP server did not start:\n{log.text()}")


@asynccontextmanager
async def http_session(env: dict[str, str], log: ServerLog) -> AsyncIterator[ClientSession]:
    process, base = start_http_server(env, log)
    try:
        async with streamable_http_client(f"{base}/mcp") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
    finally:
        process.terminate()
        process.wait(timeout=10)


def session_for(transport: Transport, env: dict[str, str], log: ServerLog) -> Any:
    if transport == "stdio":
        return stdio_session(env, log)
    return http_session(env, log)


@pytest.fixture(params=["stdio", "streamable-http"])
def transport(request: pytest.FixtureRequest) -> Transport:
    return str(request.param)
