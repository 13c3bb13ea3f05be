"""Proxy CPU per request of a cache hit vs a miss vs the cache off, embedded and on Redis.

    python scripts/bench_hits.py [STATE:CASE ...]   DURATION=8 CONNS=64
    states: embedded redis;  cases: off hit miss   (default: all six)
    floor:off    the shared bench's floor-aiohttp proxy, for a ratio from the same session
    PIN=CPU      pin the proxy to that core (taskset), as the harness does

Same harness as scripts/bench_scaling.py (the shared bench's nginx mock upstream, `meterline
serve` from scripts/bench_target.sh, wrk posting the bench's chat body). `off`: cache disabled.
`hit`: cache on, wrk repeats one body, so after the warm-up every answer is an exact hit. `miss`:
cache on in exact mode (a semantic miss also embeds the question: that is the embedder's cost,
measured in docs/cache.md), every request asks a new question, so each one looks up, misses, goes
upstream and stores. Prints one JSON line per run: req/s, proxy CPU per request, latency p50,
p99, p99.9 and max, and on Redis the commands per request by name (INFO commandstats deltas).

    python scripts/bench_hits.py backend      ROUNDS=100

`backend`: the Redis cache backend alone, in this process, on a private Redis Stack: CPU per
exact lookup (64 at once, as under wrk, so they share script calls) and per served hit of a
bookkeeping batch (50 hits of one entry, as a 50 ms flush at 1,000 hits/s writes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scaling as bs  # noqa: E402

# wrk script for `miss`: the bench body with a question no earlier request asked
MISS_LUA = r"""
local body, n, salt = nil, 0, tostring(os.time()) .. tostring(math.random(1e9))
function init(args)
  local f = assert(io.open(args[1], "rb"))
  body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for i = 2, #args do
    local k, v = args[i]:match("^%s*([^:]+)%s*:%s*(.-)%s*$")
    if k then wrk.headers[k] = v end
  end
end
function request()
  n = n + 1
  local b = body:gsub("hot path", "hot path (case " .. salt .. "-" .. n .. ")", 1)
  return wrk.format(nil, nil, nil, b)
end
"""


def wrk_script(case: str, work: Path) -> Path:
    post = (bs.BENCH / "lib" / "post.lua").read_text()
    if case != "miss":
        return bs.BENCH / "lib" / "post.lua"
    done = post[post.index("function done"):]
    path = work / "miss.lua"
    path.write_text(MISS_LUA + done)
    return path


def wrk(url: str, seconds: int, script: Path) -> dict[str, Any]:
    body = bs.BENCH / "lib" / "req-chat.json"
    out = subprocess.run(["wrk", "-t1", f"-c{bs.CONNS}", f"-d{seconds}s", "-s", str(script),
                          url, "--", str(body), bs.KEY],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON"))
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return result


def profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """PROFILE=DIR: py-spy samples the proxy (bench_target.sh execs it: `pid` is the server)
    over the measured run into DIR/NAME.txt (collapsed stacks; its sampling costs the proxy
    some CPU, so read call shares there, not the CPU line)."""
    folder = os.environ.get("PROFILE")
    if not folder:
        return None
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-f", "raw", "-r", "200",
                             "-d", str(bs.DURATION), "-o", f"{folder}/{name}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


FLOOR_UVICORN = os.environ.get("PEER", "/tmp/peerbench") + "/floor-venv/bin/uvicorn"


def run(state: str, case: str, upstream: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "UPSTREAM_BASE": upstream, "MET_DRAIN_SECONDS": "0",
           "MET_BENCH_CACHE": "0" if case == "off" else "1"}
    if case == "miss":
        env["MET_BENCH_CACHE_MODE"] = "exact"
    env.pop("REDIS_URL", None)
    stack = bs.Stack() if state == "redis" else None
    ports = [stack.port] if stack is not None else []
    if stack is not None:
        env["REDIS_URL"] = f"redis://127.0.0.1:{stack.port}"
    port = bs.free_port()
    command = ["bash", str(bs.REPO / "scripts" / "bench_target.sh"), str(port)]
    if state == "floor":  # the harness's floor-aiohttp line (installed by the bench's setup.sh)
        env["FLOOR_CLIENT"] = "aiohttp"
        command = [FLOOR_UVICORN, "--app-dir", str(bs.BENCH / "floor"), "floor_proxy:app",
                   "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http",
                   "httptools", "--no-access-log", "--log-level", "warning"]
    if os.environ.get("PIN"):
        command = ["taskset", "-c", os.environ["PIN"], *command]
    proxy = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    script = wrk_script(case, work)
    try:
        bs.wait_up(url)
        wrk(url, 2, script)  # warm up (and, for `hit`, store the answer)
        bs.BY_COMMAND.clear()
        bs.redis_counters(ports)
        before = dict(bs.BY_COMMAND)
        cpu0 = bs.tree_cpu(proxy.pid)
        spy = profile(proxy.pid, f"{state}-{case}")
        result = wrk(url, bs.DURATION, script)
        if spy is not None:
            spy.wait(60)
        cpu1 = bs.tree_cpu(proxy.pid)
        bs.BY_COMMAND.clear()
        bs.redis_counters(ports)
    finally:
        proxy.terminate()
        proxy.wait(30)
        if stack is not None:
            stack.stop()
    n = result["requests"]
    line: dict[str, Any] = {
        "state": state, "case": case, "req_s": round(n / (result["duration_us"] / 1e6)),
        "proxy_cpu_us_per_req": round(1e6 * (cpu1 - cpu0) / n, 1),
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        "p999_ms": result["p999_us"] / 1000, "max_ms": result["lat_max_us"] / 1000,
        "errors": {k: v for k, v in result.items() if k.startswith("err") and v},
        "load": os.getloadavg()[0]}
    if ports:
        line["redis_cmds_by_name_per_req"] = {
            k: round((v - before.get(k, 0)) / n, 2) for k, v in sorted(bs.BY_COMMAND.items())
            if (v - before.get(k, 0)) / n >= 0.01}
    return line


async def backend_costs(url: str, rounds: int) -> dict[str, Any]:
    from proxy.cache.backend import Entry
    from proxy.cache.bookkeeping import Batch, HitTally, Served
    from proxy.cache.redis_backend import RedisCacheBackend
    from proxy.runtime.redis_client import connect_redis

    client = connect_redis(url)
    backend = RedisCacheBackend(client, "bench:", 4, "flat")
    await backend.start()
    now = time.time()
    answer = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x" * 800},
         "finish_reason": "stop"}], "usage": {"completion_tokens": 200}}
    entry = Entry(id="e1", scope="s", partition="p", owner="engineering",
                  department="engineering", model="gpt-4o-mini", text="What is the hot path?",
                  text_hash="h", response=json.dumps(answer).encode(), cost=0.001, created=now,
                  expires_at=now + 600, ttl_seconds=600, completion_tokens=200)
    await backend.put(entry, None, 10)

    async def look(n: int) -> None:
        for _ in range(n):
            assert await backend.get_exact("s", "h") is not None

    def batch() -> Batch:
        fields = {"entry_id": "e1", "department": "engineering", "partition": "p",
                  "model": "gpt-4o-mini", "scope": "s"}
        return Batch(hits={"e1": HitTally(entry, 50, now + 900)}, counters={"a": 50, "b": 0.05},
                     served=[Served(f"r{i}", fields, 60) for i in range(50)])

    await look(20)
    await backend.book(batch())
    cpu0 = time.process_time()
    await asyncio.gather(*(look(rounds) for _ in range(64)))
    cpu1 = time.process_time()
    for _ in range(rounds):
        await backend.book(batch())
    cpu2 = time.process_time()
    await client.aclose()
    return {"case": "backend", "lookup_cpu_us": round(1e6 * (cpu1 - cpu0) / (64 * rounds), 1),
            "book_cpu_us_per_hit": round(1e6 * (cpu2 - cpu1) / (50 * rounds), 1),
            "load": os.getloadavg()[0]}


def main(runs: list[str]) -> None:
    if runs == ["backend"]:
        stack = bs.Stack()
        try:
            print(json.dumps(asyncio.run(backend_costs(
                f"redis://127.0.0.1:{stack.port}", int(os.environ.get("ROUNDS", "100"))))))
        finally:
            stack.stop()
        return
    work = Path(tempfile.mkdtemp(prefix="bench-hits-"))
    with bs.mock_upstream(work) as upstream:
        for item in runs:
            state, _, case = item.partition(":")
            print(json.dumps(run(state, case, upstream, work)), flush=True)

if __name__ == "__main__":
    main(sys.argv[1:] or [f"{s}:{c}" for s in ("embedded", "redis")
                          for c in ("off", "hit", "miss")])
