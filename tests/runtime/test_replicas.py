"""Two real `meterline serve` processes on one Redis Stack share one truth: budgets, cache,
experiment arms, keys and config reloads (issue 16, item 1; docs/scaling.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.spend.pricing import load_pricing, to_nanos
from tests.support.processes import ProxyProcess, two_replicas
from tests.support.servers import ServerThread, make_config_dir

pytestmark = pytest.mark.redis

ADMIN_KEY = "sk-replica-admin"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
BUDGET = 1.0
PROMPT_WORDS = "lorem " * 660  # ~1,000 tokens: about $0.0027 a call on gpt-4o, so $1 buys ~370
PRICING = load_pricing()


def departments() -> str:
    unlimited = {"allowed_models": ["*"],
                 "rpm": 1_000_000, "tpm": 1_000_000_000}
    return yaml.safe_dump({"version": 1, "departments": {
        "engineering": {**unlimited, "budgets": {"daily": BUDGET}, "cap_max_tokens": False},
        "sales": dict(unlimited),
    }})


EXPERIMENTS = yaml.safe_dump({"experiments": {"replica_ab": {
    "control": "gpt-4o-mini", "variant": "gpt-4.1-mini", "split": 0.5,
    "scope": {"department": ["sales"]}}}})


@pytest.fixture
def replicas(mock_upstream: ServerThread, redis_url: str, redis_prefix: str,
             tmp_path: Path) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url, timeout_s=30, edits={
        "departments.yaml": departments(), "experiments.yaml": EXPERIMENTS,
        "cache.yaml": "enabled: true\nmode: exact\nbackend: redis\n", "keys.yaml": "keys: []\n"})
    env = {"REDIS_URL": redis_url, "MET_REDIS_PREFIX": redis_prefix,
           "MET_ADMIN_KEY": ADMIN_KEY, "MOCK_UPSTREAM_KEY": "sk-upstream-test",
           "MET_WATCH_CONFIG": "1", "MET_LOG_LEVEL": "warning"}
    with two_replicas(config_dir, tmp_path, env) as pair:
        yield pair


def new_key(replica: ProxyProcess, department: str) -> tuple[str, str]:
    r = httpx.post(replica.url + "/admin/keys", json={"department": department}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def chat(url: str, key: str, text: str, model: str = "gpt-4o-mini",
         **body: Any) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}],
                            **body})


async def flood(urls: list[str], key: str, n: int) -> list[httpx.Response]:
    """`n` requests at once, alternating between the replicas."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one(i: int) -> httpx.Response:
            body = {"model": "gpt-4o", "max_tokens": 20, "temperature": 0,
                    "messages": [{"role": "user", "content": f"{i} {uuid.uuid4()} {PROMPT_WORDS}"}]}
            return await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {key}"})
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_budget_is_exact_across_replicas(replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, b = replicas
    _, key = new_key(a, "engineering")
    answers = asyncio.run(flood([a.url, b.url], key, 1000))
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 429}, sorted(set(statuses))
    for refused in (r for r in answers if r.status_code == 429):
        assert refused.json()["error"]["type"] == "insufficient_quota"  # as OpenAI sends it
        assert refused.json()["error"]["code"] == "insufficient_quota"
    served = [r for r in answers if r.status_code == 200]
    assert {r.url.port for r in served} == {a.port, b.port}  # both replicas spent the budget
    charged = sum(to_nanos(float(r.headers["x-meterline-cost-usd"])) for r in served)
    for replica in (a, b):
        budgets = httpx.get(replica.url + "/admin/budgets", headers=ADMIN).json()["data"]
        day = next(d for d in budgets if d["department"] == "engineering")["budgets"][0]
        assert day["reserved_dollars"] == 0
        assert to_nanos(day["spent_dollars"]) == charged  # one ledger, seen by both
    assert charged <= to_nanos(BUDGET)
    one_call = charged / len(served)
    assert charged > to_nanos(BUDGET) - 2 * one_call * 2, (charged, len(served))


def test_cache_entry_written_by_one_replica_is_a_hit_on_the_other(
        replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, b = replicas
    _, key = new_key(a, "sales")
    question = f"What is the capital of France? {uuid.uuid4().hex}"
    first = chat(a.url, key, question, temperature=0)
    again = chat(b.url, key, question, temperature=0)
    assert first.status_code == again.status_code == 200
    assert first.headers["x-meterline-cache"] == "miss"
    assert again.headers["x-meterline-cache"] == "hit-exact"
    assert again.json()["choices"] == first.json()["choices"]


def test_experiment_arm_is_the_same_on_every_replica(
        replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, b = replicas
    _, key = new_key(a, "sales")
    arms: dict[str, set[str]] = {}
    for i in range(30):
        user = f"user-{i}"
        for replica in (a, b):
            r = chat(replica.url, key, f"hello {uuid.uuid4().hex}", user=user)
            assert r.status_code == 200, r.text
            assert r.headers["x-meterline-experiment"] == "replica_ab"
            arms.setdefault(user, set()).add(r.headers["x-meterline-variant"])
    assert all(len(seen) == 1 for seen in arms.values()), arms
    assert {arm for seen in arms.values() for arm in seen} == {"control", "variant"}


def test_key_made_on_one_replica_works_and_is_disabled_on_the_other(
        replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, b = replicas
    key_id, key = new_key(a, "sales")
    assert chat(b.url, key, "hi").status_code == 200
    listed = httpx.get(b.url + "/admin/keys", headers=ADMIN).json()["data"]
    assert key_id in {k["id"] for k in listed}
    assert httpx.post(b.url + f"/admin/keys/{key_id}/disable", headers=ADMIN).status_code == 200
    assert chat(b.url, key, "hi").status_code == 401  # the replica that wrote it: at once
    # the other replica trusts its lookup for LOOKUP_CACHE_S (5 s), then sees the change
    deadline = time.monotonic() + 8
    while (status := chat(a.url, key, "hi").status_code) == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert status == 401


def test_config_change_reaches_every_replica(replicas: tuple[ProxyProcess, ProxyProcess],
                                             tmp_path: Path) -> None:
    """Replicas read one config directory; with MET_WATCH_CONFIG=1 each picks up an edit by
    itself (POST /admin/reload reloads only the replica that receives it)."""
    a, b = replicas
    before = {httpx.get(r.url + "/readyz").json()["config_version"] for r in replicas}
    assert len(before) == 1
    path = tmp_path / "rules" / "departments.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["departments"]["sales"]["rpm"] = 7
    path.write_text(yaml.safe_dump(spec))
    deadline = time.monotonic() + 15
    versions = before
    while time.monotonic() < deadline:
        versions = {httpx.get(r.url + "/readyz").json()["config_version"] for r in replicas}
        if before.isdisjoint(versions) and len(versions) == 1:
            break
        time.sleep(0.25)
    assert before.isdisjoint(versions) and len(versions) == 1, (before, versions)


LEASE_TTL_S = 3
RETENTION_DAYS = 1  # records are written with this TTL: their PTTL tells when each was written


@pytest.fixture
def leasing_replicas(mock_upstream: ServerThread, redis_url: str, redis_prefix: str,
                     tmp_path: Path) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    """Two replicas whose budget leases expire 3 s after a crash (MET_SPEND_LEASE_TTL_SECONDS)."""
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url, timeout_s=30, edits={
        "departments.yaml": departments(), "keys.yaml": "keys: []\n",
        "cache.yaml": "enabled: false\n"})
    env = {"REDIS_URL": redis_url, "MET_REDIS_PREFIX": redis_prefix,
           "MET_ADMIN_KEY": ADMIN_KEY, "MOCK_UPSTREAM_KEY": "sk-upstream-test",
           "MET_LOG_LEVEL": "warning", "MET_SPEND_LEASE_TTL_SECONDS": str(LEASE_TTL_S),
           "MET_SPEND_RETENTION_DAYS": str(RETENTION_DAYS)}
    with two_replicas(config_dir, tmp_path, env) as pair:
        yield pair


async def load(urls: list[str], key: str, seconds: float, workers: int = 32,
               kill: Any = None) -> list[tuple[int, str, int, float, str | None]]:
    """Requests from `workers` loops alternating between `urls` for `seconds`: (port, request id
    or "", status or 0 for a broken connection, when the answer arrived, cost header)."""
    answers: list[tuple[int, str, int, float, str | None]] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(w: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                url = urls[(w + i) % len(urls)]
                i += 1
                body = {"model": "gpt-4o", "max_tokens": 20, "temperature": 0, "messages": [
                    {"role": "user", "content": f"{w} {i} {uuid.uuid4()} {PROMPT_WORDS}"}]}
                port = int(url.rsplit(":", 1)[1])
                try:
                    r = await client.post(url + "/v1/chat/completions", json=body,
                                          headers={"authorization": f"Bearer {key}"})
                except httpx.TransportError:
                    answers.append((port, "", 0, time.monotonic(), None))
                    await asyncio.sleep(0.01)
                    continue
                answers.append((port, r.headers.get("x-meterline-request-id", ""), r.status_code,
                                time.monotonic(), r.headers.get("x-meterline-cost-usd")))
        tasks = [asyncio.create_task(one(w)) for w in range(workers)]
        if kill is not None:
            await kill()
        await asyncio.gather(*tasks)
    return answers


def flush_times(client: Any, prefix: str, request_ids: list[str]) -> list[float]:
    """When (time.monotonic()) the records with these ids were written, one entry per flush:
    a record's key expires RETENTION_DAYS after its write, so its PTTL tells the write's time
    on Redis's clock (ms); the batches of one flush (a few ms apart) count as one."""
    pipe = client.pipeline(transaction=True)  # one instant: Redis freezes its clock in EXEC
    pipe.time()
    for rid in request_ids:
        pipe.pttl(f"{prefix}rec:{rid}")
    (sec, usec), *pttls = pipe.execute()
    offset = sec + usec / 1e6 - time.monotonic()  # Redis's clock minus ours
    now_ms = sec * 1000 + usec // 1000
    writes = {(now_ms + p - RETENTION_DAYS * 86_400_000) / 1000 - offset for p in pttls if p > 0}
    flushes: list[float] = []
    for t in sorted(writes):
        if flushes and t - flushes[-1] < 0.005:
            flushes[-1] = t
        else:
            flushes.append(t)
    return flushes


def test_a_replica_killed_mid_load_loses_at_most_its_last_flush_window(
        leasing_replicas: tuple[ProxyProcess, ProxyProcess], redis_url: str,
        redis_prefix: str) -> None:
    """kill -9 one replica while both serve a $1 budget. What clients were charged and what the
    books say differ only by what the dead replica settled in its last flush window (its records
    and spend not yet written, docs/spend.md "What a crash can cost"); its lease blocks the rest
    of the budget until the lease TTL, then the other replica spends it; spend never exceeds the
    budget. The window is read from Redis, not from the clock around the kill: the times the dead
    replica's records were written say when it flushed (every window, 10 ms plus the flush), and
    the answers it gave without a record must all have come after its second-to-last flush
    (the last one cut its batch after that one ended)."""
    import redis as sync_redis

    a, b = leasing_replicas
    _, key = new_key(a, "engineering")
    killed_at: list[float] = []

    async def kill_a() -> None:
        await asyncio.sleep(0.8)
        a.proc.kill()  # SIGKILL: no shutdown, no flush, no lease given back
        killed_at.append(time.monotonic())

    first = asyncio.run(load([a.url, b.url], key, 1.6, kill=kill_a))
    assert a.proc.wait(timeout=10) == -9
    kill_t = killed_at[0]
    served_a = [x for x in first if x[0] == a.port and x[2] == 200]
    assert served_a and any(x[0] == b.port and x[2] == 200 for x in first)
    assert {x[2] for x in first} <= {0, 200, 429}
    # until the dead replica's lease expires, the survivor spends only what it does not hold
    second = asyncio.run(load([b.url], key, 1.0))
    time.sleep(LEASE_TTL_S + 0.5)
    third = asyncio.run(load([b.url], key, 3.0))
    assert {x[2] for x in second + third} <= {200, 429}
    assert 429 in {x[2] for x in third}  # the budget is used up by the end

    answers = first + second + third
    served = [x for x in answers if x[2] == 200]
    client = sync_redis.Redis.from_url(redis_url)
    try:
        recorded = {r.decode() for r in client.zrange(f"{redis_prefix}rec:ts:engineering", 0, -1)}
        spent = int(client.get(f"{redis_prefix}{{engineering}}:n:spent:"
                               f"d{int(time.time() // 86_400)}") or 0)
        # holds for the dead replica's in-flight calls keep their own reservation (10 min)
        held = int(client.get(f"{redis_prefix}{{engineering}}:n:resv:total") or 0)
        flushes = flush_times(client, redis_prefix,
                              [x[1] for x in served_a if x[1] in recorded])
    finally:
        client.close()
    charged = {x[1]: to_nanos(float(x[4] or 0)) for x in served}
    assert recorded <= set(charged)  # no record of anything a client was not answered
    gaps = sorted(b - a for a, b in zip(flushes, flushes[1:], strict=False))
    print("held", held, "flushes", len(flushes), "median gap",
          gaps[len(gaps) // 2] if gaps else None,
          "last flush before the kill", kill_t - flushes[-1])
    # it flushed every window while it served (0.8 s): 10 ms plus the flush, tens of ms on a
    # saturated core; 0.2 s leaves room for a loaded machine (MET_SPEND_FLUSH_MS=400 fails)
    assert len(flushes) >= 5 and gaps[len(gaps) // 2] <= 0.2, (len(flushes), gaps)
    assert flushes[-1] <= kill_t + 0.005
    # its last two windows, stretched by a loaded machine (0.35 s seen in the full suite); the
    # median gap above is what fails MET_SPEND_FLUSH_MS=400
    assert kill_t - flushes[-2] <= 0.6
    # its last flush window: answers that came after its second-to-last flush was written
    last_window = [x for x in served_a if x[3] > flushes[-2] - 0.005]
    missing = [x for x in served if x[1] not in recorded]
    assert {x[1] for x in missing} <= {x[1] for x in last_window}, (missing, flushes[-2:])
    assert spent <= to_nanos(BUDGET)  # never more than the budget, crash or not
    total = sum(charged.values())
    assert spent <= total  # nothing counted that no client was charged
    assert total - spent <= sum(charged[x[1]] for x in last_window)  # the books lag by that only
    one_call = max(charged.values())
    # what stays reserved: the dead replica's in-flight holds (at most its 16 of the 32 workers,
    # each a little over one call's cost) and the survivor's lease remainder. CI failed with a
    # bound on spent alone: 6 calls were in flight on the killed replica
    assert held <= 16 * 1.25 * one_call + one_call, (held, one_call)
    assert to_nanos(BUDGET) - spent - held < 4 * one_call  # the dead lease came back after its TTL
