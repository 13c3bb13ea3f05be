"""Benchmark the answer cache: lookup cost per step and hit latency through the real proxy.

    python scripts/bench_cache.py [--entries 1000] [--rounds 300] [--redis-url URL]

Part 1 (in process): one scope holding --entries real MiniLM vectors; times exact lookup,
embedding, vector search and the match rule on each backend. Part 2 (HTTP): a proxy + mock
upstream on 127.0.0.1; times misses, exact hits and semantic hits as a client sees them.
Redis runs use their own key prefix and delete it afterwards. Numbers go to docs/cache.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.cache.backend import CacheBackend, Entry  # noqa: E402
from proxy.cache.cache_key import digest, normalise  # noqa: E402
from proxy.cache.embedder import LocalEmbedder  # noqa: E402
from proxy.cache.matching.match import Candidate, MatchRule  # noqa: E402
from proxy.cache.memory import MemoryCacheBackend  # noqa: E402
from proxy.cache.redis_backend import RedisCacheBackend  # noqa: E402
from proxy.cache.token_states import TokenStates  # noqa: E402

TOPICS = ("password reset", "VPN access", "expense reports", "holiday policy", "laptop setup",
          "invoice approval", "database backups", "onboarding", "parking permits", "travel")
FORMS = ("How do I handle {t} for team {i}?", "What is the process for {t} in office {i}?",
         "Who approves {t} for project {i}?", "Where can I find the {t} guide, version {i}?")


def questions(n: int) -> list[str]:
    return [FORMS[i % len(FORMS)].format(t=TOPICS[i % len(TOPICS)], i=i) for i in range(n)]


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:7.3f} ms   p99 {p99 * 1000:7.3f} ms"


async def timed(rounds: int, step: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await step(i)
        out.append(time.perf_counter() - t0)
    return out


async def fill(backend: CacheBackend, embedder: LocalEmbedder, texts: list[str],
               states: TokenStates) -> None:
    vectors, tokens = await embedder.embed_with_tokens(texts)
    now = time.time()
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        entry = Entry(id=uuid.uuid4().hex[:16], scope="bench", partition="bench", owner="bench",
                      department="bench", model="gpt-4o", text=text,
                      text_hash=digest(normalise(text), size=32), response=b"{}", cost=0.001,
                      created=now + i, expires_at=now + 3600, ttl_seconds=3600)
        await backend.put(entry, vector, max_size=len(texts) + 1)
        states.put(entry.text_hash, tokens[i])  # as the cache does when it stores an answer


async def bench_backend(name: str, backend: CacheBackend, embedder: LocalEmbedder,
                        entries: int, rounds: int) -> None:
    texts = questions(entries)
    states = TokenStates()
    await fill(backend, embedder, texts, states)
    rule = MatchRule()
    asked = [t.replace("How do I", "How can I").replace("What is", "What's") for t in texts]
    unrelated = [f"Write a limerick about a {w} who sings opera, take {i}"
                 for i, w in enumerate(("penguin", "walrus", "teapot", "comet") * rounds)]

    async def exact(i: int) -> None:
        text = texts[i % entries]
        assert await backend.get_exact("bench", digest(normalise(text), size=32)) is not None

    async def embed(i: int) -> None:
        await embedder.embed([asked[i % entries]])

    vectors = await embedder.embed(asked[:rounds])

    async def search(i: int) -> None:
        await backend.search("bench", vectors[i % len(vectors)], 4)

    async def lookup(query: str) -> bool:
        """What SemanticCache._find does after the exact lookup: embed (with per-token
        outputs), search, drop candidates under the floor, verify the rest."""
        vectors, tokens = await embedder.embed_with_tokens([query])
        found = await backend.search("bench", vectors[0], 4)
        found = [(e, s) for e, s in found if s >= rule.candidate_threshold]
        if not found:
            return False
        candidates = [Candidate(e.text, s, states.get(e.text_hash)) for e, s in found]
        return rule.first_accepted(query, candidates, tokens[0]) is not None

    hits = 0

    async def semantic(i: int) -> None:
        nonlocal hits
        hits += await lookup(asked[i % entries])

    async def miss(i: int) -> None:
        assert not await lookup(unrelated[i])

    print(f"[{name}] {entries} entries in one scope, {rounds} rounds")
    results = {}
    for label, step in (("exact lookup", exact), ("embed 1 query", embed),
                        ("vector search k=4", search), ("semantic hit path", semantic),
                        ("semantic miss path", miss), ("embed 1 query again", embed)):
        results[label] = await timed(rounds, step)
        print(f"  {label:<20} {summary(results[label])}")
    embed_p50 = statistics.median(results["embed 1 query"] + results["embed 1 query again"])
    print(f"  semantic hit path p50 / embed p50 = "
          f"{statistics.median(results['semantic hit path']) / embed_p50:.2f} "
          f"({hits} of {rounds} rephrasings served)")


async def part1(entries: int, rounds: int, redis_url: str | None) -> None:
    embedder = await LocalEmbedder.create()
    try:
        await bench_backend("memory", MemoryCacheBackend(), embedder, entries, rounds)
        if redis_url:
            client = aioredis.Redis.from_url(redis_url)
            prefix = f"bench:{uuid.uuid4().hex[:8]}:"
            for algorithm in ("hnsw", "flat"):
                backend = RedisCacheBackend(client, f"{prefix}{algorithm}:", embedder.dim,
                                            algorithm)
                await backend.start()
                try:
                    await bench_backend(f"redis {algorithm}", backend, embedder, entries, rounds)
                finally:
                    await backend.index.delete(drop=True)
            await delete_prefix(client, prefix)
            await client.aclose()
    finally:
        await embedder.aclose()


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start:start + 500])


def part2(rounds: int, redis_url: str | None) -> None:
    from proxy.app import create_app
    from proxy.demo.upstream import create_mock_app
    from proxy.settings import Settings
    from tests.support.servers import ServerThread, make_config_dir

    mock = ServerThread(create_mock_app()).start()
    for backend in ("memory", *(("redis",) if redis_url else ())):
        config_dir = make_config_dir(Path(tempfile.mkdtemp()), mock.url)
        prefix = f"bench:{uuid.uuid4().hex[:8]}:"
        overrides: dict[str, Any] = {"redis_url": redis_url, "redis_prefix": prefix} \
            if backend == "redis" else {}
        settings = Settings.from_env({"MOCK_UPSTREAM_KEY": "k"}, config_dir=config_dir,
                                     demo=True, **overrides)
        proxy = ServerThread(create_app(settings)).start()
        try:
            http_round(proxy.url, backend, rounds)
        finally:
            proxy.stop()
            if redis_url and backend == "redis":
                asyncio.run(_drop(redis_url, prefix))
    mock.stop()


async def _drop(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    for name in await client.execute_command("FT._LIST"):
        if (name.decode() if isinstance(name, bytes) else str(name)).startswith(prefix):
            await client.execute_command("FT.DROPINDEX", name)
    await delete_prefix(client, prefix)
    await client.aclose()


def http_round(url: str, backend: str, rounds: int) -> None:
    texts = questions(rounds)
    results: dict[str, list[float]] = {"miss": [], "hit-exact": [], "hit-semantic": []}
    overhead: dict[str, list[float]] = {k: [] for k in results}
    with httpx.Client(base_url=url, headers={"authorization": "Bearer sk-demo-engineering"},
                      timeout=30) as client:
        for text in texts:
            for asked in (text, text, text.replace("How do I", "How can I")):
                t0 = time.perf_counter()
                r = client.post("/v1/chat/completions", json={
                    "model": "gpt-4o", "messages": [{"role": "user", "content": asked}]})
                elapsed = time.perf_counter() - t0
                status = r.headers.get("x-meterline-cache", "")
                if status in results:
                    results[status].append(elapsed)
                    overhead[status].append(float(r.headers["x-meterline-overhead-ms"]) / 1000)
    print(f"[http {backend}] wall time per request (client side), proxy overhead header")
    for status, samples in results.items():
        if samples:
            print(f"  {status:<13} n={len(samples):<4} {summary(samples)}   "
                  f"overhead {summary(overhead[status])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--redis-url", default=None, help="Redis Stack URL (skip Redis if unset)")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(part1(args.entries, args.rounds, args.redis_url))
    if not args.skip_http:
        part2(min(args.rounds, 200), args.redis_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
