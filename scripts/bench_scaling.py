"""Throughput and cost per request of each deployment mode (docs/scaling.md).

    python scripts/bench_scaling.py [MODE ...]   DURATION=8 CONNS=64
    modes: embedded redis cache cluster workers1 workers2 (default: all)

For each mode: the shared bench's nginx mock upstream (answers at once), `meterline serve` from
scripts/bench_target.sh with the mode's state, wrk (c=CONNS) posting the bench's chat body.
Prints one JSON line per mode: req/s, proxy CPU per request (all its processes), and on Redis
modes the Redis commands and Redis CPU per request (INFO commandstats / INFO cpu deltas over the
measured run, summed over every node). `cache` turns the answer cache on: wrk repeats one body,
so after the first request every answer is an exact hit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("BENCH", REPO.parent / "shared" / "bench"))
DURATION = int(os.environ.get("DURATION", "8"))
CONNS = int(os.environ.get("CONNS", "64"))
KEY = "Authorization: Bearer sk-bench-1234"
LIBSSL = Path(os.environ.get("REDIS_STACK_HOME", REPO / ".redis-stack")) / "libssl"
sys.path.insert(0, str(REPO))
BY_COMMAND: dict[str, int] = {}  # calls per command, summed over nodes (reset per measurement)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    ticks = 0
    for p in [str(pid), *out.split()]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_cpu(pid: int) -> list[float]:
    """CPU seconds of each worker (the supervisor's children; grandchildren of bench_target's
    bash exec are none: bash execs python)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [tree_cpu(int(p)) for p in sorted(out.split())
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def redis_counters(ports: list[int]) -> tuple[int, int, float]:
    """Commands Redis ran (those inside Lua scripts included), script calls, CPU seconds."""
    calls, scripts, cpu = 0, 0, 0.0
    for port in ports:
        client = redis.Redis(port=port)
        stats = client.info("commandstats")
        for name, value in stats.items():
            BY_COMMAND[name[8:]] = BY_COMMAND.get(name[8:], 0) + value["calls"]
        calls += sum(v["calls"] for v in stats.values())
        scripts += sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha",
                                                                      "cmdstat_eval"))
        info = client.info("cpu")
        cpu += info["used_cpu_sys"] + info["used_cpu_user"]
        client.close()
    return calls, scripts, cpu


def wrk(url: str, seconds: int) -> dict[str, Any]:
    body = BENCH / "lib" / "req-chat.json"
    out = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "-s",
                          str(BENCH / "lib" / "post.lua"), url, "--", str(body), KEY],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON"))
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return result


class Stack:
    """A Redis Stack on a free port (scripts/redis-stack.sh with a temp home)."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        (self.home / "libssl").symlink_to(LIBSSL.resolve())
        self.port = free_port()
        self._run("start", str(self.port))

    def _run(self, *args: str) -> None:
        subprocess.run(["bash", str(REPO / "scripts" / "redis-stack.sh"), *args], check=True,
                       env={**os.environ, "REDIS_STACK_HOME": str(self.home)},
                       capture_output=True)

    def stop(self) -> None:
        self._run("stop")


def run_mode(mode: str, upstream: str) -> dict[str, Any]:
    env = {**os.environ, "UPSTREAM_BASE": upstream, "MET_BENCH_CACHE": "0",
           "MET_DRAIN_SECONDS": "0"}
    env.pop("REDIS_URL", None)
    stack = cluster = None
    redis_ports: list[int] = []
    if mode in ("redis", "cache", "workers1", "workers2"):
        stack = Stack()
        env["REDIS_URL"] = f"redis://127.0.0.1:{stack.port}"
        redis_ports = [stack.port]
    if mode == "cache":
        env["MET_BENCH_CACHE"] = "1"
    if mode == "cluster":
        from tests.support.redis_cluster import RedisCluster

        lib = LIBSSL / "usr" / "lib" / "x86_64-linux-gnu"
        cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="bench-cluster-")), lib,
                               replicas=0).start()
        env.update(REDIS_URL=cluster.url, MET_REDIS_CLUSTER="1")
        redis_ports = list(cluster.ports)
    if mode.startswith("workers"):
        env["MET_WORKERS"] = mode[-1]
    port = free_port()
    proxy = subprocess.Popen(["bash", str(REPO / "scripts" / "bench_target.sh"), str(port)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        wait_up(url)
        wrk(url, 2)  # warm up (and, in cache mode, store the answer)
        calls0, scripts0, rcpu0 = redis_counters(redis_ports)
        before = dict(BY_COMMAND)
        cpu0, workers0 = tree_cpu(proxy.pid), worker_cpu(proxy.pid)
        result = wrk(url, DURATION)
        cpu1, workers1 = tree_cpu(proxy.pid), worker_cpu(proxy.pid)
        BY_COMMAND.clear()
        calls1, scripts1, rcpu1 = redis_counters(redis_ports)
    finally:
        proxy.terminate()
        proxy.wait(30)
        if stack is not None:
            stack.stop()
        if cluster is not None:
            cluster.stop()
    n = result["requests"]
    errors = sum(v for k, v in result.items() if k.startswith("err"))
    line = {"mode": mode, "req_s": round(n / (result["duration_us"] / 1e6)),
            "proxy_cpu_us_per_req": round(1e6 * (cpu1 - cpu0) / n, 1),
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
            "errors": errors, "proxy_cpu_s": round(cpu1 - cpu0, 2),
            "load_avg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    if len(workers1) > 1:  # how evenly the work spread: CPU seconds of each worker
        line["worker_cpu_s"] = [round(b - a, 2) for a, b in zip(workers0, workers1, strict=True)]
    if redis_ports:
        line["redis_cmds_per_req"] = round((calls1 - calls0) / n, 2)
        line["redis_scripts_per_req"] = round((scripts1 - scripts0) / n, 2)
        line["redis_cpu_us_per_req"] = round(1e6 * (rcpu1 - rcpu0) / n, 1)
        line["redis_cmds_by_name_per_req"] = {
            k: round((v - before.get(k, 0)) / n, 2) for k, v in sorted(BY_COMMAND.items())
            if (v - before.get(k, 0)) / n >= 0.01}
    return line


def wait_up(url: str, timeout_s: float = 90) -> None:
    body = (BENCH / "lib" / "req-chat.json").read_bytes()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", KEY, "--data-binary",
                               f"@{BENCH / 'lib' / 'req-chat.json'}", url], check=False)
        if done.returncode == 0 and body:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer")


@contextmanager
def mock_upstream(work: Path) -> Iterator[str]:
    """The shared bench's nginx mock (fast: answers at once) in `work`; yields its base URL."""
    fast, slow = free_port(), free_port()
    subprocess.run([sys.executable, str(BENCH / "mock" / "gen_mock.py"), str(work / "mock"),
                    str(fast), str(slow), "50", "2"], check=True, capture_output=True)
    (work / "mock" / "tmp_body").mkdir(exist_ok=True)
    mock = subprocess.Popen(["nginx", "-c", str(work / "mock" / "nginx.conf")])
    time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{fast}/v1"
    finally:
        mock.terminate()
        mock.wait(10)


def main(modes: list[str]) -> None:
    with mock_upstream(Path(tempfile.mkdtemp(prefix="bench-scaling-"))) as upstream:
        for mode in modes:
            print(json.dumps(run_mode(mode, upstream)), flush=True)

if __name__ == "__main__":
    main(sys.argv[1:] or ["embedded", "redis", "cache", "cluster", "workers1", "workers2"])
