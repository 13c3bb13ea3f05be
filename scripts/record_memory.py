"""Bytes per usage record the embedded spend store (MemorySpendBackend) keeps (issue 13 item 4).

    python scripts/record_memory.py [RECORDS]      default 100000

Puts records shaped like the soak's (scripts/soak/mix.lua: one department and key, the body's
model and user parsed afresh for each request, misses with tokens and a cost, a quarter of them
streamed) into a store and prints the traced memory per record:
  filling   RECORDS records into a store that keeps them all, counted after the first 10,000 (so
            the rollups, which stop growing after the first record of an hour, are not counted)
  turned over  a store bounded at RECORDS after 3 x RECORDS more puts (each put drops the oldest),
            against the store after its first 10,000 records: the record dict's table is
            rebuilt at three times the records it holds once dropped entries fill it.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import tracemalloc
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from proxy.spend.memory import MemorySpendBackend  # noqa: E402
from proxy.spend.records import UsageRecord  # noqa: E402

BODY = b'{"model":"gpt-4o-mini","temperature":0,"max_tokens":64,"user":"soak","stream":false}'
DEPARTMENT, KEY_ID, PROVIDER = "engineering", "bench", "openai"  # config objects: shared


def soak_record(n: int, now: float) -> UsageRecord:
    body = orjson.loads(BODY)  # a fresh model and user string per request, as the gateway has
    stream = n % 4 == 3
    return UsageRecord(
        request_id="req_" + secrets.token_hex(16), ts=now + n / 1000, department=DEPARTMENT,
        key_id=KEY_ID, user=body["user"], endpoint="chat.completions",
        model_requested=body["model"], model_used=body["model"], provider=PROVIDER, status=200,
        input_tokens=17 + n % 7, output_tokens=40 + n % 24, cost_nanos=26_550 + 600 * (n % 24),
        cache="miss", latency_ms=3.0 + (n % 97) / 10, ttft_ms=1.5 + (n % 13) / 10 if stream
        else None, stream=stream)


async def bytes_per_record(count: int, bound: int, turns: int = 0, first: int = 10_000) -> float:
    now = time.time()
    store = MemorySpendBackend(clock=lambda: now, max_records=bound, retention_seconds=86_400)
    tracemalloc.start()
    for n in range(first):
        await store.put_record(soak_record(n, now))
    before = tracemalloc.get_traced_memory()[0]
    for n in range(first, count * (1 + turns)):
        await store.put_record(soak_record(n, now))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / (min(count * (1 + turns), bound) - first)


if __name__ == "__main__":
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    filling = asyncio.run(bytes_per_record(records + 10_000, records + 10_000))
    turned = asyncio.run(bytes_per_record(records, records, turns=3))
    print(f"{filling:.0f} bytes per record filling ({records:,} records after the first 10,000), "
          f"{turned:.0f} turned over (a store of {records:,} after {3 * records:,} more puts)")
