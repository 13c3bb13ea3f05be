"""CPU of an embedded exact cache hit inside the app, without the HTTP server: the app is called
directly as ASGI, one request after another, on uvloop in this process.

    python scripts/bench_hit_inproc.py                 N=30000 ROUNDS=1
    REPO=/path/to/another/checkout python scripts/bench_hit_inproc.py
    taskset -c 1 python scripts/bench_hit_inproc.py     (one quiet core)

The config is the harness target's (scripts/bench_target.sh with the exact cache on, so every
check on the request path stays on); the one miss before the measured run goes to the demo's
mock upstream, started here. The server's share of a request (uvicorn's parsing and writing, ~40 µs
on the bench machine) is not in these numbers: `scripts/bench_hits.py` measures the whole
request under wrk. What this one is for is comparing two versions of the hit path with the
server's noise left out: run it alternately on two checkouts (`REPO=`) and compare medians.
Prints one line per round: µs of wall time and of process CPU per hit.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
BODY = Path(os.environ.get("BENCH", HERE.parents[2] / "shared" / "bench")) / "lib" / "req-chat.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def outer() -> int:
    """Write the harness target's config (bench_target.sh), then run this file inside it."""
    repo = Path(os.environ.get("REPO", HERE.parents[1])).resolve()
    port = free_port()
    env = {**os.environ, "MET_BENCH_CACHE": "1", "MET_BENCH_CACHE_MODE": "exact",
           "UPSTREAM_BASE": f"http://127.0.0.1:{port}/v1", "MET_PY_WRAPPER": str(HERE),
           "INPROC_MOCK_PORT": str(port), "INPROC_REPO": str(repo)}
    return subprocess.run(["bash", str(HERE.parent / "bench_target.sh"), "0"], env=env,
                          check=False).returncode


async def inner(config_dir: Path) -> None:
    import uvicorn
    from starlette.types import Message

    from proxy.app import create_app
    from proxy.demo.upstream import create_mock_app
    from proxy.settings import Settings

    mock = uvicorn.Server(uvicorn.Config(create_mock_app(), host="127.0.0.1",
                                         port=int(os.environ["INPROC_MOCK_PORT"]),
                                         log_level="warning"))
    mock_task = asyncio.ensure_future(mock.serve())
    while not mock.started:
        await asyncio.sleep(0.05)
    app = create_app(Settings.from_env(config_dir=config_dir))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    body = BODY.read_bytes()
    headers = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer sk-bench-1234"),
               (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]

    async def one() -> int:
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5555),
            "scheme": "http", "method": "POST", "root_path": "", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "headers": headers,
            "state": {}}
        received = False
        status: list[int] = []

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    for _ in range(200):  # the miss that stores the answer, then warm hits
        assert await one() == 200
    await asyncio.sleep(0.2)  # the miss's store and bookkeeping land
    n = int(os.environ.get("N", "30000"))
    for _ in range(int(os.environ.get("ROUNDS", "1"))):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await one()
            if i % 64 == 63:  # let the bookkeeping flushes run, as a server's loop would
                await asyncio.sleep(0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{n} hits: {1e6 * wall / n:.1f} us/hit wall, {1e6 * cpu / n:.1f} us/hit cpu",
              flush=True)
    await lifespan.__aexit__(None, None, None)
    mock.should_exit = True
    await mock_task


def main() -> int:
    if "--config" not in sys.argv:
        return outer()
    sys.path.insert(0, os.environ["INPROC_REPO"])
    import uvloop

    uvloop.run(inner(Path(sys.argv[sys.argv.index("--config") + 1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
