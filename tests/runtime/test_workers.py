"""`meterline serve --workers 2` as real processes: both workers serve, on one Redis, and
/metrics adds every worker's counters up whichever worker answers the scrape."""

from __future__ import annotations

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


@pytest.fixture
def workers(mock_upstream: ServerThread, redis_url: str, redis_prefix: str,
            tmp_path: Path) -> Iterator[ProxyProcess]:
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url,
                                 edits={"cache.yaml": "enabled: false\n"})
    proc = ProxyProcess(config_dir, tmp_path / "serve.log", {
        "REDIS_URL": redis_url, "MET_REDIS_PREFIX": redis_prefix, "MET_ADMIN_KEY": ADMIN_KEY,
        "MOCK_UPSTREAM_KEY": "sk-up", "MET_LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}, "--workers", "2")
    try:
        yield proc.wait_ready()
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
