"""Hostile requests through the running proxy (tests/support/fuzzing.py says what is sent).

The default suite sends MET_FUZZ_EXAMPLES (default 300) requests; `bash scripts/fuzz.sh` sends
10,000 and writes the numbers (statuses, RSS before and after) to MET_FUZZ_REPORT.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.fuzzing import Hostile, ProxyProcess, Tally, check, fuzz_config, hostile_requests
from tests.support.fuzzing import send as send_request

EXAMPLES = int(os.environ.get("MET_FUZZ_EXAMPLES", "300"))
RANDOM = os.environ.get("MET_FUZZ_RANDOM") == "1"
WARMUP = 200
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    config = fuzz_config(tmp_path_factory.mktemp("fuzz-rules"))
    proxy = ProxyProcess(config, tmp_path_factory.mktemp("fuzz-log") / "proxy.log")
    try:
        proxy.wait_ready()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def client(target: ProxyProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, timeout=60) as http:
        yield http


def normal_request(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/chat/completions", json=CHAT,
                       headers={"authorization": "Bearer sk-demo-engineering"})


def test_hostile_requests_get_openai_errors_and_leave_the_proxy_well(
        target: ProxyProcess, client: httpx.Client) -> None:
    for i in range(WARMUP):  # caches, pools and allocator arenas settle before RSS is read
        assert client.post("/v1/chat/completions", json={**CHAT, "user": f"warm{i % 20}"},
                           headers={"authorization": "Bearer sk-demo-sales"}).status_code == 200
    rss_before = target.rss_bytes()
    tally = Tally()
    every = max(50, EXAMPLES // 10)

    # the default suite replays the same examples every run (no flaky failures on a merge);
    # scripts/fuzz.sh draws new ones each time
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=list(HealthCheck))
    @given(hostile_requests())
    def fuzz(request: Hostile) -> None:
        response = send_request(client, request)
        tally.sent += 1
        tally.statuses[response.status_code] += 1
        tally.routes[f"{request.method} {request.route}"] += 1
        if tally.sent % every == 0:
            tally.rss_mb.append(round(target.rss_bytes() / 2**20, 1))
        check(request, response)

    try:
        fuzz()
    finally:  # the numbers are written even when an example failed
        rss_after = target.rss_bytes()
        final = normal_request(client)
        log = target.log()
        samples = tally.rss_mb
        report = {"sent": tally.sent, "statuses": dict(sorted(tally.statuses.items())),
                  "routes": dict(tally.routes.most_common()),
                  "rss_before_mb": round(rss_before / 2**20, 1),
                  "rss_after_mb": round(rss_after / 2**20, 1), "rss_samples_mb": samples,
                  "final_status": final.status_code, "tracebacks_in_log": log.count("Traceback")}
        if os.environ.get("MET_FUZZ_REPORT"):
            Path(os.environ["MET_FUZZ_REPORT"]).write_text(json.dumps(report, indent=2))
    assert tally.sent >= EXAMPLES
    assert final.status_code == 200, final.text
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:4000]
    # flat: the first hostile requests fill bounded tables (the demo upstream keeps its last 200
    # request bodies, up to 2 MB each here; caches and key lookups have caps), after which the
    # second half of the run may not grow
    half = samples[len(samples) // 2] if samples else rss_before / 2**20
    assert rss_after / 2**20 - half < 48, report
