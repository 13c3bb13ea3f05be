"""Microbenchmark: accounting.reserve + accounting.settle on the embedded spend store.

Builds real services (proxy.runtime.lifecycle.start_services) over a copy of rules/ with limits the
run cannot reach (as scripts/bench_target.sh does), keeps ~64 reservations outstanding in a deque,
and reports the best of 3 runs in µs per call for reserve and settle.

    python scripts/bench_spend.py                    # this checkout
    python scripts/bench_spend.py --compare HEAD~1   # also a git ref, interleaved, same machine

With --compare the ref's `proxy/` is exported (git archive) to a temp dir and both versions run
alternately in subprocesses, so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def make_config(target: Path) -> None:
    shutil.copytree(REPO / "rules", target, dirs_exist_ok=True)
    providers = yaml.safe_load((target / "providers.yaml").read_text())
    for provider in providers["providers"].values():
        provider["base_url"] = "http://127.0.0.1:9/v1"
        provider["api_key_env"] = "BENCH_UPSTREAM_KEY"
    (target / "providers.yaml").write_text(yaml.safe_dump(providers))
    depts = yaml.safe_load((target / "departments.yaml").read_text())
    depts["departments"]["engineering"].update(
        budgets={"hourly": 1e9, "daily": 1e9, "monthly": 1e9}, rpm=10**9, tpm=10**12,
        circuit_breaker={"window_minutes": 10, "max_dollars": 1e9})
    (target / "departments.yaml").write_text(yaml.safe_dump(depts))
    cache = target / "cache.yaml"
    if cache.exists():
        data = yaml.safe_load(cache.read_text()) or {}
        data["enabled"] = False
        cache.write_text(yaml.safe_dump(data))


async def measure(calls: int, outstanding: int) -> dict[str, float]:
    from proxy.gateway import accounting
    from proxy.gateway.requests import Call, new_record
    from proxy.gateway.upstream import UpstreamTarget
    from proxy.keys.store import Principal
    from proxy.runtime.lifecycle import start_services, stop_services
    from proxy.settings import Settings

    with tempfile.TemporaryDirectory() as conf:
        make_config(Path(conf))
        settings = Settings.from_env({"BENCH_UPSTREAM_KEY": "x"}, config_dir=Path(conf))
        services = await start_services(settings)
        try:
            principal = Principal("bench", "engineering", None, False)
            body = {"model": "gpt-4o-mini", "max_tokens": 64,
                    "messages": [{"role": "user", "content": "hello there " * 8}]}
            target = UpstreamTarget("openai", None, "gpt-4o-mini", "x")  # type: ignore[arg-type]
            usage = {"prompt_tokens": 31, "completion_tokens": 57, "total_tokens": 88,
                     "prompt_tokens_details": {"cached_tokens": 0}}
            pending: deque[tuple[Any, Any]] = deque()
            t_reserve = t_settle = 0.0
            for i in range(calls + outstanding):
                call = Call(f"req-{i}", "chat.completions", "/chat/completions",
                            time.perf_counter(), principal, dict(body), b"{}")
                call.prompt_tokens = 31
                call.record = new_record(call, "gpt-4o-mini")
                t0 = time.perf_counter()
                reservation = await accounting.reserve(services, call, "gpt-4o-mini")
                t_reserve += time.perf_counter() - t0 if i >= outstanding else 0.0
                pending.append((call, reservation))
                if len(pending) > outstanding:
                    old_call, old_res = pending.popleft()
                    old_call.record.status = 200
                    t0 = time.perf_counter()
                    await accounting.settle(services, old_call, old_res, target, usage, False)
                    t_settle += time.perf_counter() - t0
        finally:
            await stop_services(services)
    return {"reserve_us": t_reserve / calls * 1e6, "settle_us": t_settle / calls * 1e6}


def run_here(calls: int, outstanding: int) -> dict[str, float]:
    return asyncio.run(measure(calls, outstanding))


def run_in(tree: Path, calls: int, outstanding: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--once", "--calls", str(calls),
         "--outstanding", str(outstanding)],
        env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def export_ref(ref: str, target: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "proxy"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: min(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--outstanding", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="REF", help="git ref to time against")
    parser.add_argument("--once", action="store_true", help="one run, JSON on stdout")
    args = parser.parse_args()
    if args.once:
        print(json.dumps(run_here(args.calls, args.outstanding)))
        return
    trees = {"current": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare:
            trees = {args.compare: Path(tmp), "current": REPO}
            export_ref(args.compare, Path(tmp))
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.repeat):
            for name, tree in trees.items():
                runs[name].append(run_in(tree, args.calls, args.outstanding))
    for name, results in runs.items():
        b = best(results)
        print(f"{name:>12}: reserve {b['reserve_us']:6.2f} µs  settle {b['settle_us']:6.2f} µs"
              f"  (best of {args.repeat}, {args.calls} calls, {args.outstanding} outstanding)")


if __name__ == "__main__":
    main()
