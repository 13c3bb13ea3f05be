"""`meterline serve --workers N`: uvicorn's supervisor, with one listening socket per worker.

uvicorn binds one socket and hands it to every worker; whichever worker wakes first accepts, and
asyncio accepts a whole burst per wake-up. A load generator's or a client pool's 64 keep-alive
connections went 22/42 (wrk) and 128 went 0/128 (tests/runtime/test_workers.py), and the busier
worker capped the pair. Here each worker gets its own socket bound with SO_REUSEPORT, so the
kernel hashes every new connection over the workers' sockets."""

from __future__ import annotations

import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import Multiprocess


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A bound, not yet listening, socket of a SO_REUSEPORT group (the worker listens)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"meterline: cannot bind {host}:{port}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    return sock


class ReusePortSupervisor(Multiprocess):
    """uvicorn's Multiprocess (signals, health checks, restarts) where every worker it starts,
    first or replacement, gets a fresh socket of the port's SO_REUSEPORT group.

    Multiprocess reads `self.sockets` each time it builds a worker, so that attribute is a
    property here. The supervisor closes its copy once the worker has started (the spawned
    child holds its own): a copy left open would keep a dead worker's socket in the group, and
    the kernel would go on hashing connections to a socket nobody accepts on."""

    def __init__(self, config: Config) -> None:
        self._handed_out: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        sock = reuse_port_socket(self.config.host, self.config.port)
        self._handed_out.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, _: list[socket.socket]) -> None:
        """Multiprocess.__init__ stores the shared sockets; there are none to store."""

    def init_processes(self) -> None:
        try:
            super().init_processes()
        finally:
            self._close_handed_out()

    def restart_all(self) -> None:
        try:
            super().restart_all()
        finally:
            self._close_handed_out()

    def keep_subprocess_alive(self) -> None:
        try:
            super().keep_subprocess_alive()
        finally:
            self._close_handed_out()

    def _close_handed_out(self) -> None:
        while self._handed_out:
            self._handed_out.pop().close()
