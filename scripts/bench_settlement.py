"""What one Redis sustains through the spend path: reserve -> settle -> usage record, no HTTP.

    python scripts/bench_settlement.py [--replicas 2] [--seconds 10] [--concurrency 64]
                                       [--departments 4] [--direct]

Starts a private Redis Stack (scripts/redis-stack.sh; or uses REDIS_URL) and `--replicas`
processes, each a simulated replica: one `Ledger` on the Redis backend (leases and batched
writes; `--direct`: the per-request scripts of before) with `--concurrency` tasks that each loop
reserve -> settle with a usage record, round-robin over `--departments` departments that have
hourly, daily and monthly budgets, rpm/tpm limits and a circuit breaker (limits out of reach, so
every check runs and nothing is refused). Prints one JSON line: requests/s over all replicas,
Redis commands and Redis CPU per request (INFO commandstats / INFO cpu deltas, commands inside
scripts included), Redis's CPU use during the run, and the requests/s one Redis core would
sustain at that cost (1 s / Redis CPU per request). At the end it checks the books: the spend in
Redis equals the sum of what every replica settled, and every record is there once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_scaling import Stack  # noqa: E402

from proxy.config.departments import parse_departments  # noqa: E402
from proxy.spend.budgets import SpendOptions  # noqa: E402
from proxy.spend.ledger import create_spend_store  # noqa: E402
from proxy.spend.pricing import load_pricing  # noqa: E402
from proxy.spend.records import UsageRecord  # noqa: E402

PREFIX = f"bench{os.getpid()}:"  # the replicas get it as an argument


def departments(count: int) -> Any:
    spec = {"budgets": {"hourly": 1e9, "daily": 1e9, "monthly": 1e9}, "rpm": 10**9,
            "tpm": 10**12, "circuit_breaker": {"window_minutes": 10, "max_dollars": 1e9}}
    return parse_departments({"departments": {f"dept{i}": dict(spec) for i in range(count)}})


async def replica(index: int, url: str, args: argparse.Namespace, start: float,
                  stop: float, prefix: str) -> dict[str, int]:
    pricing = load_pricing()
    options = SpendOptions(key_prefix=prefix, leases=not args.direct)
    ledger = create_spend_store(url, departments(args.departments), pricing, options=options)
    names = [f"dept{i}" for i in range(args.departments)]
    done = charged = total = 0
    cost = pricing.cost("gpt-4o-mini", {"prompt_tokens": 120, "completion_tokens": 40})

    async def worker(w: int) -> None:
        nonlocal done, charged, total
        i = 0
        while time.time() < stop:
            dept = names[(w + i) % len(names)]
            i += 1
            res = await ledger.reserve(dept, "gpt-4o-mini", 120, 256)
            now = time.time()
            record = UsageRecord(
                request_id=f"r{index}-{w}-{i}", ts=now, department=dept, key_id=f"k{w % 8}",
                user=f"u{w % 16}", endpoint="chat.completions", model_requested="gpt-4o-mini",
                model_used="gpt-4o-mini", provider="openai", status=200, input_tokens=120,
                output_tokens=40, cost_nanos=cost.nanos)
            await ledger.settle(res, cost.nanos, record)
            if now >= start:
                done += 1
            charged += cost.nanos
            total += 1

    await asyncio.sleep(max(0.0, start - 2 - time.time()))  # every replica starts together
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    await ledger.close()
    return {"done": done, "charged": charged, "total": total}


def run_replica(index: int, url: str, args: argparse.Namespace, start: float, stop: float,
                prefix: str, out: Any) -> None:
    out.put(asyncio.run(replica(index, url, args, start, stop, prefix)))


def counters(client: redis.Redis) -> tuple[int, float, dict[str, int]]:
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    by_name = {k[8:]: v["calls"] for k, v in stats.items()}
    return sum(by_name.values()), cpu["used_cpu_sys"] + cpu["used_cpu_user"], by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--departments", type=int, default=4)
    parser.add_argument("--direct", action="store_true",
                        help="the per-request scripts of before (MET_SPEND_LEASES=0)")
    args = parser.parse_args()
    stack = None
    url = os.environ.get("REDIS_URL")
    if not url:
        stack = Stack()
        url = f"redis://127.0.0.1:{stack.port}"
    client = redis.Redis.from_url(url)
    try:
        warmup = 3.0
        start = time.time() + 2 + warmup
        stop = start + args.seconds
        out: Any = multiprocessing.get_context("spawn").Queue()
        procs = [multiprocessing.get_context("spawn").Process(
            target=run_replica, args=(i, url, args, start, stop, PREFIX, out))
            for i in range(args.replicas)]
        for proc in procs:
            proc.start()
        time.sleep(max(0.0, start - time.time()))
        calls0, cpu0, by0 = counters(client)
        t0 = time.time()
        time.sleep(max(0.0, stop - time.time()))
        calls1, cpu1, by1 = counters(client)
        elapsed = time.time() - t0
        results = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(60)
        done = sum(r["done"] for r in results)
        charged = sum(r["charged"] for r in results)
        total = sum(r["total"] for r in results)
        spent = sum(int(client.get(k) or 0) for k in client.scan_iter(f"{PREFIX}{{*}}:n:spent:d*"))
        records = client.zcard(f"{PREFIX}rec:ts")
        redis_cpu = cpu1 - cpu0
        line = {
            "mode": "direct" if args.direct else "leases", "replicas": args.replicas,
            "concurrency": args.concurrency, "departments": args.departments,
            "req_s": round(done / elapsed),
            "redis_cmds_per_req": round((calls1 - calls0) / done, 2),
            "redis_cpu_us_per_req": round(1e6 * redis_cpu / done, 2),
            "redis_cpu_busy": round(redis_cpu / elapsed, 3),
            "one_redis_core_req_s": round(done / redis_cpu) if redis_cpu else None,
            "redis_cmds_by_name_per_req": {
                k: round((v - by0.get(k, 0)) / done, 3) for k, v in sorted(by1.items())
                if (v - by0.get(k, 0)) / done >= 0.005},
            "books_exact": spent == charged and records == total,
            "spent_nanos": spent, "charged_nanos": charged, "records": records,
            "requests": total,
        }
        print(json.dumps(line), flush=True)
    finally:
        client.close()
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    main()
