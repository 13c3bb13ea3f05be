"""`meterline serve --workers 2` as real processes: both workers serve, on one Redis, and
/metrics adds every worker's counters up whichever worker answers the scrape."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.support.processes import ProxyProcess
from tests.support.servers import ServerThread, make_config_dir

pytestmark = pytest.mark.redis

ADMIN_KEY = "sk-workers-admin"
REQUESTS = 60
CONNECTIONS = 128


@pytest.fixture
def workers(mock_upstream: ServerThread, redis_url: str, redis_prefix: str,
            tmp_path: Path) -> Iterator[ProxyProcess]:
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url,
                                 edits={"cache.yaml": "enabled: false\n"})
    proc = ProxyProcess(config_dir, tmp_path / "serve.log", {
        "REDIS_URL": redis_url, "MET_REDIS_PREFIX": redis_prefix, "MET_ADMIN_KEY": ADMIN_KEY,
        "MOCK_UPSTREAM_KEY": "sk-up", "MET_LOG_LEVEL": "info",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}, "--workers", "2")
    try:
        proc.wait_ready()  # the first worker answers
        deadline = time.monotonic() + 60
        while proc.log().count("Application startup complete") < 2:  # and the second is up
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        yield proc
    finally:
        proc.stop()


def requests_total(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("meterline_requests_total{") and 'route="/v1/chat' in line)


def requests_per_worker(multiproc_dir: Path) -> dict[str, float]:
    """Chat requests each worker process counted: prometheus_client's multiprocess mode keeps
    one counter file per process (counter_<pid>.db)."""
    counted: dict[str, float] = {}
    for path in multiproc_dir.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        counted[path.stem.split("_", 1)[1]] = sum(
            value for key, value, *_ in values
            if '"meterline_requests_total"' in key and "/v1/chat/completions" in key)
    return counted


def test_two_workers_serve_and_metrics_add_up(workers: ProxyProcess, tmp_path: Path) -> None:
    key = httpx.post(workers.url + "/admin/keys", json={"department": "engineering"},
                     headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["key"]
    for _ in range(REQUESTS):  # a new connection each: the kernel hands them to either worker
        r = httpx.post(workers.url + "/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {key}", "connection": "close"},
                       json={"model": "gpt-4o-mini",
                             "messages": [{"role": "user", "content": uuid.uuid4().hex}]})
        assert r.status_code == 200
    deadline = time.monotonic() + 10  # a request is counted just after its last byte
    while True:
        counted = requests_per_worker(tmp_path / "prom")
        if sum(counted.values()) >= REQUESTS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(v > 0 for v in counted.values()) == [True, True]  # both workers answered
    assert sum(counted.values()) == REQUESTS
    for _ in range(6):  # whichever worker answers the scrape, the totals are the same
        scrape = httpx.get(workers.url + "/metrics", headers={"connection": "close"}).text
        assert requests_total(scrape) == REQUESTS


def test_stopped_workers_leave_no_live_gauges_behind(workers: ProxyProcess,
                                                     tmp_path: Path) -> None:
    """A worker that stops must drop its live gauges (in-flight requests): a restarted worker
    would otherwise keep adding a dead process's value. Counters stay: they must not reset."""
    assert httpx.get(workers.url + "/metrics").status_code == 200
    prom = tmp_path / "prom"
    assert any(f.name.startswith("gauge_live") for f in prom.iterdir())
    workers.stop()
    assert not [f.name for f in prom.iterdir() if f.name.startswith("gauge_live")]
    assert any(f.name.startswith("counter_") for f in prom.iterdir())


def listening_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on 127.0.0.1:port (/proc/net/tcp, state 0A)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return {f[9] for f in (row.split() for row in rows)
            if f[1] == f"0100007F:{port:04X}" and f[3] == "0A"}


def sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def test_each_worker_listens_on_its_own_socket(workers: ProxyProcess) -> None:
    """One shared listening socket lets whichever worker wakes first accept: wrk's 64 keep-alive
    connections went 22/42 and the busier worker capped the pair. With a socket per worker
    (SO_REUSEPORT) the kernel hashes connections over the workers."""
    deadline = time.monotonic() + 10  # a worker listens just after its startup is complete
    while len(listening := listening_sockets(workers.port)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = worker_pids(workers)
    assert len(listening) == 2
    assert [len(sockets_of(pid) & listening) for pid in children] == [1, 1]
    assert not sockets_of(workers.proc.pid) & listening  # the supervisor accepts nothing


def test_a_replaced_worker_leaves_no_socket_behind(workers: ProxyProcess) -> None:
    """The supervisor closes its copy of each worker's socket: a copy left open would keep a
    dead worker's socket listening, and the kernel would hash connections to it forever."""
    deadline = time.monotonic() + 10
    while len(listening_sockets(workers.port)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    dead = worker_pids(workers)[0]
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = worker_pids(workers)
        listening = listening_sockets(workers.port)
        if dead not in children and len(children) == 2 and len(listening) == 2 and all(
                sockets_of(pid) & listening for pid in children):
            break
        time.sleep(0.2)
    assert len(listening) == 2 and dead not in children
    assert [len(sockets_of(pid) & listening) for pid in children] == [1, 1]
    assert not sockets_of(workers.proc.pid) & listening


def test_keep_alive_connections_spread_over_the_workers(workers: ProxyProcess,
                                                       tmp_path: Path) -> None:
    """A burst of connections, as a load generator or a client pool opens them: with a shared
    socket the first worker to wake accepts most of the burst, and keeps those connections."""
    key = httpx.post(workers.url + "/admin/keys", json={"department": "engineering"},
                     headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["key"]
    connections = [http.client.HTTPConnection("127.0.0.1", workers.port, timeout=30)
                   for _ in range(CONNECTIONS)]
    try:
        for connection in connections:  # all connected before the first request
            connection.connect()
        for connection in connections:
            connection.request("POST", "/v1/chat/completions", body=json.dumps(
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
                headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
            assert connection.getresponse().read() and connection.sock is not None
    finally:
        for connection in connections:
            connection.close()
    counted = wait_counted(tmp_path / "prom", CONNECTIONS)
    assert sum(counted.values()) == CONNECTIONS
    # a hash of the 4-tuple: Binomial(128, 1/2) is below 40 with probability 1e-5
    assert min(counted.values()) >= 40, counted


def worker_pids(workers: ProxyProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(workers.proc.pid)], capture_output=True,
                         text=True).stdout.split()
    return [int(p) for p in out if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def wait_counted(multiproc_dir: Path, expected: int) -> dict[str, float]:
    deadline = time.monotonic() + 10  # a request is counted just after its last byte
    while True:
        counted = requests_per_worker(multiproc_dir)
        if sum(counted.values()) >= expected or time.monotonic() > deadline:
            return counted
        time.sleep(0.1)
