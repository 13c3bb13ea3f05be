"""Benchmark: spend reports over 1,000,000 usage records on Redis, and chat latency while the Spend
page polls them (issue 18, item 7). A script, not a timed test; numbers go to docs/benchmarks.md.

    python scripts/bench_reports.py --redis-url redis://127.0.0.1:6379 [--records 1000000]

1. Writes `--records` usage records for this month (1st 00:00 UTC .. now) with the proxy's own
   record script (record + hour/day/month rollups), under a fresh key prefix: 4 departments,
   `--users` users with a key each, 6 models, 3 routes, 2 experiments.
2. Starts the mock upstream and `meterline serve` (that Redis, that prefix, cache off) as two
   processes (`--cpus 0,1` pins them to a core each; run the script itself on the mock's core).
3. Times GET /admin/spend (this month, as the Spend page asks, and by user), ranges cut inside
   an hour, /admin/chargeback (JSON and CSV), /v1/spend, /v1/spend/daily, the experiment
   results, listing and recommendations, the alerts, the forecast and budget recommendations:
   best, median, p95 of `--repeat` calls.
4. With `--stalls PATHS`: how long each of these requests holds the proxy's event loop (a
   probe request every 2 ms while the path is fetched over and over).
5. Chat p99: `--chat` requests at concurrency `--concurrency` without and with a poller fetching
   the Spend page's sources every `--poll-seconds` as the page does (PAGE_POLL: /v1/alerts, then
   /admin/spend, /admin/chargeback?format=json and /v1/cache/analytics together, then
   /v1/spend/daily?days=30 and /admin/forecast?horizon=8d together), in alternating rounds so
   other load on the machine hits both alike.
The key prefix is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ADMIN = {"authorization": "Bearer sk-demo-admin"}
DEPARTMENTS = ("engineering", "sales", "marketing", "executive")
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "mixtral-8x7b", "llama-3.1-8b")
ROUTES = (None, "summaries", "short-sales-marketing")
TASKS = (None, "summary", "code", "support")
CACHE = ("miss", "miss", "hit-exact", "off")
ARMS = (("summary_model", "control"), ("summary_model", "variant"),
        ("support_small_models", "control"), ("support_small_models", "llama"))


# what the Spend page fetches every 10 s with an admin key (proxy/ui/spend.js refresh(): the
# key's alerts, then its figures together, then its charts together)
PAGE_POLL = (("/v1/alerts",),
             ("/admin/spend", "/admin/chargeback?format=json", "/v1/cache/analytics"),
             ("/v1/spend/daily?days=30", "/admin/forecast?horizon=8d"))


def has_keys(url: str, prefix: str) -> bool:
    import redis

    with redis.Redis.from_url(url) as r:
        return next(r.scan_iter(match=f"{prefix}*", count=1000), None) is not None


def month_start(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()


async def populate(url: str, prefix: str, count: int, users: int, seed: int = 1) -> float:
    """Write `count` records through the proxy's record script; returns seconds taken."""
    import redis.asyncio as aioredis

    from proxy.spend.budgets import SpendOptions
    from proxy.spend.pricing import load_pricing
    from proxy.spend.records import UsageRecord
    from proxy.spend.redis_backend import RedisSpendBackend

    options = SpendOptions()
    backend = RedisSpendBackend(aioredis.Redis.from_url(url), prefix=prefix, clock=time.time,
                                retention_seconds=options.record_retention_seconds,
                                backlog_max_records=options.backlog_max_records,
                                owns_client=True)
    pricing, rng = load_pricing(), random.Random(seed)
    now = time.time()
    start, end = month_start(now), now - 60
    people = [(f"user{u}", f"key{u}", DEPARTMENTS[u % len(DEPARTMENTS)]) for u in range(users)]
    retention = int(options.record_retention_seconds)
    began = time.perf_counter()
    for first in range(0, count, 2000):
        async with backend.client.pipeline(transaction=False) as pipe:
            for i in range(first, min(count, first + 2000)):
                user, key, dept = rng.choice(people)
                model = rng.choice(MODELS)
                arm = rng.choice(ARMS) if rng.random() < 0.1 else (None, None)
                failed = rng.random() < 0.02
                usage = {"prompt_tokens": rng.randint(20, 3000),
                         "completion_tokens": rng.randint(5, 800)}
                cost = pricing.cost(model, usage)
                record = UsageRecord(
                    request_id=f"bench{i}", ts=rng.uniform(start, end), department=dept,
                    key_id=key, user=user, endpoint="chat.completions", model_requested=model,
                    model_used=model, provider="openai", status=502 if failed else 200,
                    error="upstream_error" if failed else None, task=rng.choice(TASKS),
                    cache=rng.choice(CACHE), ttft_ms=rng.uniform(50, 900),
                    input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"],
                    cost_nanos=cost.nanos, route_rule=rng.choice(ROUTES), experiment=arm[0],
                    variant=arm[1], latency_ms=rng.uniform(200, 4000),
                    quality_score=rng.choice((None, None, 0.0, 1.0)))
                keys, args = backend._rollup_call(record, f"{prefix}rec:ts", now - retention)
                keys += [backend._record_key(record.request_id), f"{prefix}rec:ts:{dept}"]
                await backend._record(keys=keys, args=args, client=pipe)
            await pipe.execute()
        if first % 100_000 == 0:
            print(f"  {first:>9,} records written", file=sys.stderr, flush=True)
    await backend.client.set(f"{prefix}roll:backfilled", "1")
    await backend.client.set(f"{prefix}roll:backfilled:arms", "1")
    await backend.close()
    return time.perf_counter() - began


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def start_servers(url: str, prefix: str, tmp: str,
                  cpus: tuple[str, str] | None) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """The mock upstream and `meterline serve` (that Redis, that prefix, cache off) as two OS
    processes, as in production: the proxy has its own interpreter and GIL (before, both ran
    as threads of one process, so the mock's work landed in the proxy's latency). With `cpus`,
    each is pinned to its own core (taskset)."""
    from tests.support.servers import make_config_dir

    env = {**os.environ, "PYTHONPATH": str(REPO), "MOCK_UPSTREAM_KEY": "sk-bench",
           "MET_DEMO": "1", "MET_DEMO_HISTORY": "0", "REDIS_URL": url,
           "MET_REDIS_PREFIX": prefix, "MET_DRAIN_SECONDS": "0", "MET_LOG_LEVEL": "warning"}
    mock_port, proxy_port = free_port(), free_port()
    pin = (lambda n: ["taskset", "-c", cpus[n]]) if cpus else (lambda n: [])
    mock = subprocess.Popen([*pin(1), sys.executable, "-m", "proxy", "mock-upstream",
                             "--port", str(mock_port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL)
    mock_url = f"http://127.0.0.1:{mock_port}"
    wait_http(mock_url + "/v1/models", mock)
    config_dir = make_config_dir(Path(tmp), mock_url, timeout_s=30,
                                 edits={"cache.yaml": "enabled: false\n"})
    depts = yaml.safe_load((config_dir / "departments.yaml").read_text())
    depts["departments"]["sales"].update(  # limits the run cannot reach, as bench_spend.py
        budgets={"hourly": 1e9, "daily": 1e9, "monthly": 1e9}, rpm=10**9, tpm=10**12,
        circuit_breaker={"window_minutes": 10, "max_dollars": 1e9})
    (config_dir / "departments.yaml").write_text(yaml.safe_dump(depts))
    proxy = subprocess.Popen([*pin(0), sys.executable, "-m", "proxy", "serve", "--port",
                              str(proxy_port), "--config", str(config_dir)], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL)  # the banner: stdout is the results
    base = f"http://127.0.0.1:{proxy_port}"
    wait_http(base + "/healthz", proxy)
    return base, [proxy, mock]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_get(client: httpx.Client, base: str, path: str, repeat: int,
             headers: dict[str, str]) -> dict[str, Any]:
    took, statuses = [], set()
    for _ in range(repeat):
        began = time.perf_counter()
        r = client.get(base + path, headers=headers, timeout=600)
        took.append((time.perf_counter() - began) * 1000)
        statuses.add(r.status_code)
    result = {"path": path, "status": sorted(statuses), "best_ms": round(min(took), 1),
              "median_ms": round(statistics.median(took), 1),
              "p95_ms": round(percentile(took, 0.95), 1), "bytes": len(r.content)}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


async def chat_round(base: str, count: int, concurrency: int, poll: float | None,
                     stages: tuple[tuple[str, ...], ...] = PAGE_POLL) -> list[float]:
    import aiohttp  # a lighter client than httpx: the load generator shares a core with the mock

    latencies: list[float] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def get(path: str) -> None:
            async with client.get(base + path, headers=ADMIN) as r:
                await r.read()  # the status is not checked: /v1/cache/analytics is a 404 here

        async def poller() -> None:
            while not stop.is_set():
                for stage in stages:  # as proxy/ui/spend.js: each stage after the previous
                    await asyncio.gather(*(get(s) for s in stage))
                try:
                    await asyncio.wait_for(stop.wait(), poll)
                except TimeoutError:
                    pass

        async def worker(n: int) -> None:
            for _ in range(n):
                body = {"model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
                began = time.perf_counter()
                async with client.post(base + "/v1/chat/completions", json=body,
                                       headers={"authorization": "Bearer sk-demo-sales"}) as r:
                    await r.read()
                latencies.append((time.perf_counter() - began) * 1000)
                r.raise_for_status()

        polling = asyncio.create_task(poller()) if poll else None
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        stop.set()
        if polling is not None:
            await polling
    return latencies


async def stall_probe(base: str, path: str | None, seconds: float) -> dict[str, Any]:
    """What one report costs the other requests of the replica: a cheap request (GET
    /v1/models) every 2 ms while `path` is fetched over and over (or nothing, `path` None);
    the probe's p99 and max are how long the report held the event loop."""
    import aiohttp

    latencies: list[float] = []
    done = asyncio.Event()
    async with aiohttp.ClientSession() as client:
        async def probe() -> None:
            while not done.is_set():
                began = time.perf_counter()
                async with client.get(base + "/v1/models", headers=ADMIN) as r:
                    await r.read()
                latencies.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(0.002)

        probing = asyncio.create_task(probe())
        calls, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            if path is None:
                await asyncio.sleep(0.05)
                continue
            async with client.get(base + path, headers=ADMIN) as r:
                await r.read()
            calls += 1
            await asyncio.sleep(0.05)
        done.set()
        await probing
    result = {"path": path or "(nothing)", "calls": calls, "probes": len(latencies),
              "probe_p50_ms": round(percentile(latencies, 0.5), 2),
              "probe_p99_ms": round(percentile(latencies, 0.99), 2),
              "probe_max_ms": round(max(latencies), 2)}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--chat", type=int, default=2000, help="chat requests per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per condition")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll-seconds", type=float, default=10.0)
    parser.add_argument("--prefix", help="reuse the records written under this key prefix")
    parser.add_argument("--poll", help="comma-separated paths polled together instead of the "
                        "Spend page's stages (to tell which source costs the chat p99)")
    parser.add_argument("--keep", action="store_true", help="do not delete the records")
    parser.add_argument("--cpus", help="two CPU lists for taskset, proxy first: 0,1")
    parser.add_argument("--skip-reports", action="store_true", help="only the chat p99 rounds")
    parser.add_argument("--stalls", help="comma-separated paths: how long each holds the event "
                        "loop (a probe request every 2 ms while it is fetched repeatedly)")
    parser.add_argument("--stall-seconds", type=float, default=8.0)
    args = parser.parse_args()
    prefix = args.prefix or f"bench:{uuid.uuid4().hex[:8]}:"
    write_s = 0.0
    if not args.prefix or not has_keys(args.redis_url, prefix):
        print(f"writing {args.records:,} records under {prefix}", file=sys.stderr)
        write_s = asyncio.run(populate(args.redis_url, prefix, args.records, args.users))
    tmp = tempfile.mkdtemp()
    cpus = tuple(args.cpus.split(",")) if args.cpus else None
    base, servers = start_servers(args.redis_url, prefix, tmp, cpus)  # type: ignore[arg-type]
    try:
        now = time.time()
        edge_from = month_start(now) + 1234.5
        edge_to = now - 1800
        sales = {"authorization": "Bearer sk-demo-sales"}
        results = {"records": args.records, "users": args.users, "write_s": round(write_s, 1)}
        with httpx.Client() as client:
            client.get(base + "/admin/spend", headers=ADMIN, timeout=600).raise_for_status()
            results["reports"] = [] if args.skip_reports else [
                time_get(client, base, path, args.repeat, headers) for path, headers in [
                    ("/admin/spend", ADMIN),
                    ("/admin/spend?by=user", ADMIN),
                    (f"/admin/spend?from={edge_from}&to={edge_to}", ADMIN),
                    (f"/admin/chargeback?format=json&from={edge_from}&to={edge_to}", ADMIN),
                    ("/admin/chargeback?format=json", ADMIN),
                    ("/admin/chargeback?format=csv", ADMIN),
                    ("/v1/spend", sales),
                    ("/v1/spend/daily?days=30", ADMIN),
                    ("/v1/spend/daily?days=30", sales),
                    ("/admin/experiments/summary_model", ADMIN),
                    ("/admin/experiments", ADMIN),
                    ("/admin/recommendations", ADMIN),
                    ("/admin/alerts", ADMIN),
                    ("/v1/alerts", sales),
                    ("/admin/forecast?horizon=8d", ADMIN),
                    ("/admin/budget-recommendations", ADMIN),
                ]]
        if args.stalls:
            results["stalls"] = [asyncio.run(stall_probe(base, p or None, args.stall_seconds))
                                 for p in ["", *args.stalls.split(",")]]
        rounds: dict[str, list[float]] = {"without polling": [], "with polling": []}
        stages = (tuple(args.poll.split(",")),) if args.poll else PAGE_POLL
        for _ in range(args.rounds):
            rounds["without polling"] += asyncio.run(
                chat_round(base, args.chat, args.concurrency, None))
            rounds["with polling"] += asyncio.run(
                chat_round(base, args.chat, args.concurrency, args.poll_seconds, stages))
            print(json.dumps({n: round(percentile(v, 0.99), 1) for n, v in rounds.items()}),
                  file=sys.stderr, flush=True)
        results["chat"] = {name: {"n": len(v), "p50_ms": round(percentile(v, 0.5), 1),
                                  "p99_ms": round(percentile(v, 0.99), 1)}
                           for name, v in rounds.items() if v}
        print(json.dumps(results, indent=2))
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.keep:
        import redis

        r = redis.Redis.from_url(args.redis_url)
        batch: list[bytes] = []
        for key in r.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) == 5000:
                r.delete(*batch)
                batch.clear()
        if batch:
            r.delete(*batch)
        r.close()


if __name__ == "__main__":
    main()
