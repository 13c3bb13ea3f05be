"""Real uvicorn servers in background threads: the mock upstream and the proxy under test."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """uvicorn.Server on its own event loop in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="asyncio",
                                http="h11", log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()
            self.error = exc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"server failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def running(app: Any) -> Iterator[ServerThread]:
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


def make_config_dir(dest: Path, mock_url: str, *, timeout_s: float = 3.0,
                    edits: dict[str, Any] | None = None) -> Path:
    """A copy of rules/ whose providers all point at the mock upstream."""
    shutil.copytree(REPO_ROOT / "rules", dest, dirs_exist_ok=True)
    providers = yaml.safe_load((dest / "providers.yaml").read_text())
    for provider in providers["providers"].values():
        provider["base_url"] = mock_url + "/v1"
        provider["timeout_s"] = timeout_s
        provider["api_key_env"] = "MOCK_UPSTREAM_KEY"
    (dest / "providers.yaml").write_text(yaml.safe_dump(providers))
    for name, content in (edits or {}).items():
        (dest / name).write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return dest


def providers_with_models(mock_url: str, *models: str) -> dict[str, str]:
    """A `providers.yaml` edit for make_config_dir/start_proxy: the shipped providers pointed at
    the mock, plus `models` served by the openai provider."""
    providers = yaml.safe_load((REPO_ROOT / "rules" / "providers.yaml").read_text())
    for provider in providers["providers"].values():
        provider["base_url"] = mock_url + "/v1"
        provider["api_key_env"] = "MOCK_UPSTREAM_KEY"
    for model in models:
        providers["models"][model] = {"targets": [{"provider": "openai"}]}
    return {"providers.yaml": yaml.safe_dump(providers)}


def fault(mock_url: str, name: str, times: int = 1) -> None:
    httpx.post(f"{mock_url}/_mock/faults", json={"fault": name, "times": times}).raise_for_status()


def reply(mock_url: str, text: str, times: int = 1) -> None:
    """The next `times` chat answers (non-streamed) of the mock are exactly `text`."""
    httpx.post(f"{mock_url}/_mock/faults", json={"reply": text, "times": times}).raise_for_status()


def clear_faults(mock_url: str) -> None:
    httpx.post(f"{mock_url}/_mock/faults", json={"clear": True}).raise_for_status()


def mock_requests(mock_url: str) -> list[dict[str, Any]]:
    """What the mock upstream received, with a JSON object body. The mock is shared by the whole
    session and some tests send it unreadable bodies on purpose; those are left out here."""
    data: list[dict[str, Any]] = httpx.get(f"{mock_url}/_mock/requests").json()
    return [r for r in data if isinstance(r.get("body"), dict)]
