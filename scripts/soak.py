"""Memory soak (issue 13 item 4): does the proxy's RSS hold over 200,000 cached requests?

    python scripts/soak.py [MODE ...]     REQUESTS=200000 CHUNK_S=30 WARMUP=20000 CONNS=16
    modes: embedded redis (state), each with the cache on in CACHE_MODE (default semantic: the
           local embedder; exact: no embedder)
           idle (idle RSS with the cache in exact mode, i.e. no embedder, and in semantic mode)
    OUT=stem writes stem.json and stem.md (default: print only)

Each mode starts the shared bench's nginx mock upstream (answers at once, SSE when asked),
`meterline serve` from scripts/bench_target.sh (cache on; Redis state from a private Redis Stack
in `redis` mode) and drives it with wrk and scripts/soak/mix.lua in runs of CHUNK_S seconds
until REQUESTS have been sent: exact repeats of 200 questions, paraphrases of them, new
questions, streams of both, and bad bodies (400). After each run it reads the proxy's VmRSS
(/proc/PID/status). Growth is the RSS at the end against the RSS after WARMUP requests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import KEY, REPO, Stack, free_port, mock_upstream, tree_cpu  # noqa: E402

REQUESTS = int(os.environ.get("REQUESTS", "200000"))
CHUNK_S = int(os.environ.get("CHUNK_S", "30"))
WARMUP = int(os.environ.get("WARMUP", "20000"))
CONNS = int(os.environ.get("CONNS", "16"))
CACHE_MODE = os.environ.get("CACHE_MODE", "semantic")
MIX = REPO / "scripts" / "soak" / "mix.lua"
# prometheus-client writes the labels sorted by name (department, kind, model, result): the
# model sits between kind and result, so each is read on its own
CACHE_LINE = re.compile(r'^meterline_cache_requests_total\{([^}]*)\} (\S+)', re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    return round(kb / 1024, 1)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cache_counts(base: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for labels, value in CACHE_LINE.findall(text):
        named = dict(LABEL.findall(labels))
        name = f"{named.get('kind')}_{named.get('result')}"
        counts[name] = counts.get(name, 0) + float(value)
    return counts


def wrk_chunk(url: str, first: int) -> dict[str, Any]:
    out = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{CHUNK_S}s", "--timeout", "30s", "-s",
                          str(MIX), url, "--", str(first), KEY],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON"))
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return result


class Proxy:
    """`meterline serve` from bench_target.sh (bash execs python: the pid is the proxy's)."""

    def __init__(self, upstream: str, cache_mode: str, redis_url: str | None) -> None:
        env = {**os.environ, "UPSTREAM_BASE": upstream, "MET_BENCH_CACHE": "1",
               "MET_BENCH_CACHE_MODE": cache_mode, "MET_DRAIN_SECONDS": "0",
               "PYTHONPATH": str(REPO)}
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "bench_target.sh"), str(self.port)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.base}/readyz", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"{self.base} not ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def idle_rss(upstream: str, cache_mode: str) -> float:
    proxy = Proxy(upstream, cache_mode, None)
    try:
        time.sleep(3)  # the heap settles after the lifespan (gc.freeze)
        return rss_mb(proxy.process.pid)
    finally:
        proxy.stop()


def soak(upstream: str, state: str) -> dict[str, Any]:
    stack = Stack() if state == "redis" else None
    proxy = Proxy(upstream, CACHE_MODE,
                  f"redis://127.0.0.1:{stack.port}" if stack is not None else None)
    pid, url = proxy.process.pid, f"{proxy.base}/v1/chat/completions"
    samples: list[dict[str, Any]] = [{"requests": 0, "rss_mb": rss_mb(pid)}]
    statuses = {"s2xx": 0, "s4xx": 0, "s5xx": 0}
    errors, started, cpu0 = 0, time.monotonic(), tree_cpu(pid)
    try:
        counts0 = cache_counts(proxy.base)
        sent = 0
        while sent < REQUESTS:
            result = wrk_chunk(url, sent)
            errors += sum(v for k, v in result.items() if k.startswith("err_") and
                          k != "err_status")
            for name in statuses:
                statuses[name] += result[name]
            sent += result["requests"]
            samples.append({"requests": sent, "rss_mb": rss_mb(pid),
                            "req_s": round(result["requests"] / (result["duration_us"] / 1e6))})
            print(f"{state}: {sent} requests, RSS {samples[-1]['rss_mb']} MB, "
                  f"{samples[-1]['req_s']} req/s, load {load_average()}", file=sys.stderr)
        counts1 = cache_counts(proxy.base)
        cpu = tree_cpu(pid) - cpu0
    finally:
        proxy.stop()
        if stack is not None:
            stack.stop()
    return summarise(state, samples, statuses, errors, time.monotonic() - started, cpu,
                     {k: v - counts0.get(k, 0) for k, v in counts1.items()})


def summarise(state: str, samples: list[dict[str, Any]], statuses: dict[str, int], errors: int,
              wall_s: float, cpu_s: float, cache: dict[str, float]) -> dict[str, Any]:
    warm = next(s for s in samples if s["requests"] >= WARMUP)
    end = samples[-1]
    return {"mode": f"{state}, cache {CACHE_MODE}", "requests": end["requests"],
            "statuses": statuses, "socket_errors": errors, "cache": cache, "wall_s": round(wall_s),
            "proxy_cpu_s": round(cpu_s), "idle_rss_mb": samples[0]["rss_mb"],
            "warm_rss_mb": warm["rss_mb"], "warm_at": warm["requests"],
            "end_rss_mb": end["rss_mb"], "peak_rss_mb": max(s["rss_mb"] for s in samples),
            "growth_pct": round(100 * (end["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"], 1),
            "load_avg_end": load_average(), "samples": samples}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| mode | requests | 2xx / 4xx / 5xx | idle | after warm-up | end | peak | growth |"
             " cache hits exact / semantic, misses |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r["mode"] == "idle":
            lines.append(f"| idle, cache exact (no embedder) | | | {r['exact_mb']} MB | | | | | |")
            lines.append(f"| idle, cache semantic (local embedder) | | | {r['semantic_mb']} MB"
                         " | | | | | |")
            continue
        s, c = r["statuses"], r["cache"]
        misses = sum(v for k, v in c.items() if k.endswith("_miss"))
        lines.append(
            f"| {r['mode']} | {r['requests']:,} | {s['s2xx']:,} / {s['s4xx']:,} / {s['s5xx']:,}"
            f" | {r['idle_rss_mb']} MB | {r['warm_rss_mb']} MB ({r['warm_at']:,}) | "
            f"{r['end_rss_mb']} MB | {r['peak_rss_mb']} MB | {r['growth_pct']:+} % | "
            f"{c.get('exact_hit', 0):,.0f} / {c.get('semantic_hit', 0):,.0f}, {misses:,.0f} |")
    return "\n".join(lines) + "\n"


def main(modes: list[str]) -> None:
    results: list[dict[str, Any]] = []
    with mock_upstream(Path(tempfile.mkdtemp(prefix="soak-"))) as upstream:
        for mode in modes:
            if mode == "idle":
                result = {"mode": "idle", "exact_mb": idle_rss(upstream, "exact"),
                          "semantic_mb": idle_rss(upstream, "semantic")}
            else:
                result = soak(upstream, mode)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    print(markdown(results))
    if stem := os.environ.get("OUT"):
        Path(f"{stem}.json").write_text(json.dumps(results, indent=1))
        Path(f"{stem}.md").write_text(markdown(results))


if __name__ == "__main__":
    main(sys.argv[1:] or ["idle", "embedded", "redis"])
