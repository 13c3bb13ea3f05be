"""What `meterline serve` tells its operator: a busy port before anything starts, what a real
start lacks (with the command or variable that fixes each), and the banner once it listens."""

from __future__ import annotations

import logging
import socket
import time

import uvicorn

from proxy.errors import ServiceUnavailable
from proxy.runtime.services import Services


def bind_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on, or None. Binds the way uvicorn does
    (SO_REUSEADDR), so a port held only by closed connections is not reported."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                return (f"{host}:{port} is already in use (another meterline?); "
                        f"choose another port with --port {port + 1} (or MET_PORT)")
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


async def missing_setup(services: Services) -> list[str]:
    """What a non-demo start lacks before any call can succeed, each with its fix."""
    if services.settings.demo:
        return []
    problems: list[str] = []
    try:
        now = time.time()
        usable = [r for r in await services.keys.list() if r.usable(now)]
    except ServiceUnavailable:
        usable = None  # the key store is down: /readyz says so
    if usable is not None and not any(r.admin for r in usable):
        problems.append("no admin key: set MET_ADMIN_KEY to a long random secret and restart "
                        "(or `meterline init DIR` writes a config directory with one)")
    if usable is not None and not any(not r.admin for r in usable):
        problems.append("no inbound keys, so every API call is a 401: "
                        "`meterline keys create --department NAME` prints one")
    problems += [f"provider '{name}' has no credential: set {env}"
                 for name, env in missing_credentials(services)]
    return problems


def missing_credentials(services: Services) -> list[tuple[str, str]]:
    """(provider, variable) for every provider a model uses that no department can call."""
    config = services.config
    used = sorted({t.provider for e in config.providers.models.values() for t in e.targets})
    departments: list[str | None] = [None, *config.departments.names]
    return [(name, config.providers.providers[name].api_key_env or "its api_key_env")
            for name in used
            if all(services.credential(name, dept) is None for dept in departments)]


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server that announces `banner` once its socket listens, not before: printed for
    a person, or as one log record when the logs are JSON (every output line stays parseable)."""

    def __init__(self, config: uvicorn.Config, banner: str, *, as_log: bool = False) -> None:
        super().__init__(config)
        self.banner = banner
        self.as_log = as_log

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        if self.as_log:
            logging.getLogger("meterline").info(self.banner)
        else:
            print(self.banner, flush=True)
