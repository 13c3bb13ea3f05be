"""What one Redis sustains through the spend path: reserve -> settle -> usage record, no HTTP.

    python scripts/bench_settlement.py [--replicas 2] [--seconds 10] [--concurrency 64]
                                       [--departments 4] [--direct]
    python scripts/bench_settlement.py --redis-only [--replicas 4] [--batch 100]

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

`--redis-only` measures Redis alone, without the replicas' Python (which, on a small machine,
runs out of CPU long before Redis): each simulated replica builds one flush window's writes with
the real code (proxy.spend.leases: the records' MULTI with batch.lua for `--batch` requests, and
one lease call per department carrying those requests' spend, breaker and tpm deltas and a slice
request), then sends that window again and again as fast as Redis answers, with fresh record ids
and lease sequence numbers each time (a few bytes changed in the prepared RESP payload), one
round trip per window. Requests/s = records written per second.
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
from urllib.parse import urlparse

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
    if args.redis_only:
        global lease_sha
        import hashlib

        from proxy.spend.leases import LeasedRedisBackend  # noqa: F401
        from proxy.spend.redis_backend import _script
        lease_sha = hashlib.sha1(_script("lease.lua").encode()).hexdigest()  # noqa: S324
        out.put(asyncio.run(redis_only(index, url, args, start, stop, prefix)))
        return
    out.put(asyncio.run(replica(index, url, args, start, stop, prefix)))


TOKEN = b"QQQQQQQQQQ"  # replaced by the window's number in record ids


def resp(*parts: Any) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def prepared_window(index: int, url: str, args: argparse.Namespace,
                          prefix: str) -> tuple[bytes, list[tuple[list[Any], list[Any]]], int]:
    """One flush window of this simulated replica, built by the real backend: the records'
    MULTI payload (ids carry TOKEN) and each department's lease call (keys, args)."""
    from proxy.runtime.redis_client import connect_redis
    from proxy.spend.budgets import Settlement, reservation_amount
    from proxy.spend.leases import LeasedRedisBackend
    from proxy.spend.rollups import bucket_start

    client = connect_redis(url)
    backend = LeasedRedisBackend(client, prefix=prefix, clock=time.time,
                                 retention_seconds=35 * 86_400.0, backlog_max_records=10**6)
    await client.script_load(backend._batch.script)
    await client.script_load(backend._lease_call.script)
    pricing = load_pricing()
    cost = pricing.cost("gpt-4o-mini", {"prompt_tokens": 120, "completion_tokens": 40})
    now = time.time()
    names = [f"dept{i}" for i in range(args.departments)]
    records = [UsageRecord(
        request_id=f"r{index}-{TOKEN.decode()}-{i:05d}", ts=now, department=names[i % len(names)],
        key_id=f"k{i % 8}", user=f"u{i % 16}", endpoint="chat.completions",
        model_requested="gpt-4o-mini", model_used="gpt-4o-mini", provider="openai", status=200,
        input_tokens=120, output_tokens=40, cost_nanos=cost.nanos) for i in range(args.batch)]
    horizon = now - 35 * 86_400.0
    keys, batch_args = backend._batch_call(records, bucket_start("h", now), horizon, False, False)
    parts = [resp("MULTI")]
    for record in records:
        parts.append(resp("SET", backend._record_key(record.request_id), backend._json(record),
                          "EX", 35 * 86_400))
    for name in names:
        members: list[Any] = []
        for record in records:
            if record.department == name:
                members += [repr(record.ts), record.request_id]
        parts.append(resp("ZADD", f"{prefix}rec:ts:{name}", *members))
    parts.append(resp("EVALSHA", backend._batch.sha, len(keys), *keys, *batch_args))
    parts.append(resp("EXEC"))
    # the lease calls the flusher would send for these requests: real settlements, captured
    plans = departments(args.departments)
    captured: list[tuple[list[Any], list[Any]]] = []

    def capture(keys: list[Any], args: list[Any]) -> Any:
        captured.append((list(keys), list(args)))
        n = (len(args) - 27) // 3

        async def reply() -> list[Any]:
            return [0, "0", "0", [0] * n, [0] * n, 0, 0, [], 0, 0, 0, 0, 0, 0]
        return reply()

    backend._lease_call = capture  # type: ignore[assignment]
    ledger_windows = {n: create_spend_store(None, plans, pricing) for n in names}
    for _ in range(2):  # the second window is the steady state (key TTLs already set)
        captured.clear()
        for name in names:
            dept_state = backend._department(name)
            plan = ledger_windows[name]._plan(plans.get(name), "gpt-4o-mini", 120, 256)
            backend._learn(dept_state, plan)
            dept_state.last_admit = time.monotonic()
            for record in records:
                if record.department == name:
                    await backend.commit(Settlement(name, "x", cost.nanos, now, plan.windows,
                                                    10, -216))
            share = sum(1 for r in records if r.department == name)  # a window's admissions
            dept_state.admitted_requests, dept_state.admitted_tokens = share, share * 120
            dept_state.admitted_need = share * reservation_amount(plan.fixed_nanos,
                                                                  plan.per_token_nanos, 256)
            dept_state.rate_since = time.monotonic() - backend._interval
            await backend._flush_department(name, dept_state)
    await client.aclose()
    return b"".join(parts), captured, cost.nanos


async def redis_only(index: int, url: str, args: argparse.Namespace, start: float, stop: float,
                     prefix: str) -> dict[str, int]:
    records, leases, cost = await prepared_window(index, url, args, prefix)
    where = urlparse(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port or 6379)
    done = total = 0
    n = 0
    await asyncio.sleep(max(0.0, start - 2 - time.time()))
    window = asyncio.Semaphore(args.inflight)  # windows sent and not yet answered
    sent: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()

    async def send() -> None:
        nonlocal n
        while time.time() < stop:
            await window.acquire()
            n += 1
            marker = b"end-%d" % n
            calls = [resp("EVALSHA", lease_sha, len(keys), *keys, *args_[:3], n, *args_[4:])
                     for keys, args_ in leases]
            writer.write(records.replace(TOKEN, b"%010d" % n) + b"".join(calls)
                         + resp("ECHO", marker))
            await writer.drain()
            sent.put_nowait((marker, time.time() >= start))
        sent.put_nowait((b"", False))

    async def receive() -> None:
        nonlocal done, total
        data = b""
        while True:
            marker, measured = await sent.get()
            if not marker:
                return
            end = marker + b"\r\n"
            while end not in data:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    raise ConnectionError("Redis closed the connection")
                data += chunk
            answered, data = data.split(end, 1)
            if b"\r\n-" in answered or answered.startswith(b"-"):
                raise RuntimeError(answered[answered.find(b"-"):][:200].decode(errors="replace"))
            total += args.batch
            done += args.batch if measured else 0
            window.release()

    await asyncio.gather(send(), receive())
    writer.close()
    return {"done": done, "charged": total * cost, "total": total}


lease_sha = ""


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
    parser.add_argument("--redis-only", action="store_true",
                        help="replay prepared flush windows: what Redis sustains by itself")
    parser.add_argument("--batch", type=int, default=100,
                        help="--redis-only: requests per flush window per replica")
    parser.add_argument("--inflight", type=int, default=1,
                        help="--redis-only: windows a simulated replica has sent and not yet "
                             "had answered (several replicas' flushers on one connection)")
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
            "mode": "redis-only" if args.redis_only else "direct" if args.direct else "leases",
            "replicas": args.replicas,
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
