"""`meterline serve` as a real OS process (what a replica behind a load balancer is), for tests
that need several processes on one Redis, signals, or the process's own log output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import REPO_ROOT, free_port


class ProxyProcess:
    """`python -m proxy serve` on a free port; stderr (the logs) goes to `log_path`."""

    def __init__(self, config_dir: Path, log_path: Path, env: dict[str, str],
                 *args: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        # no readiness drain on SIGTERM unless a test asks for one: the 5 s default (for a load
        # balancer) made each stop() 5 s, ~2 min of the suite
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MET_DRAIN_SECONDS": "0", **env}
        for inherited in ("REDIS_URL", "MET_WORKERS", "PROMETHEUS_MULTIPROC_DIR"):
            if inherited not in env:
                full_env.pop(inherited, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--port", str(self.port),
             "--config", str(config_dir), *args],
            env=full_env, stdout=subprocess.DEVNULL, stderr=self._log, cwd=REPO_ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> ProxyProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meterline serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"meterline serve did not start:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def two_replicas(config_dir: Path, tmp_path: Path,
                 env: dict[str, str]) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    """Two replicas on one config and one state, both ready; stopped on exit."""
    started = [ProxyProcess(config_dir, tmp_path / f"replica{i}.log", env) for i in (1, 2)]
    try:
        a, b = (p.wait_ready() for p in started)
        yield a, b
    finally:
        for proc in started:  # both at once
            if proc.proc.poll() is None:
                proc.terminate()
        for proc in started:
            proc.stop()
