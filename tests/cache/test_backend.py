"""The cache's storage seam (proxy/cache/backend.py): Entry encoding, output-limit fit,
eviction order, tightened thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.cache.backend import (
    COMPLETE,
    ENTRY_FIELDS,
    TIGHTENED_FIELDS,
    Entry,
    Tightened,
    eviction_target,
    least_valuable,
)


def entry(entry_id: str = "e1", *, hits: int = 0, cost: float = 0.0, created: float = 0.0,
          **more: Any) -> Entry:
    return Entry(id=entry_id, scope="s", partition="p", owner="o", department="d", model="m",
                 text="héllo 🙂", text_hash="h", response=b'{"a":1}', cost=cost,
                 created=created, expires_at=created + 60, ttl_seconds=60, hits=hits, **more)


def test_entry_round_trips_through_fields() -> None:
    original = entry(hits=3, cost=0.25, created=10.5, task="faq", completion_tokens=12,
                     cut_limit=100)
    fields = original.to_fields()
    assert tuple(fields) == ENTRY_FIELDS
    assert Entry.from_fields(fields) == original


def test_entry_reads_redis_replies() -> None:
    """Redis hands back bytes for every field, numbers as text."""
    original = entry(hits=2, cost=1.5, created=3.0)
    raw = {k: (v if isinstance(v, bytes) else str(v).encode())
           for k, v in original.to_fields().items()}
    assert Entry.from_fields(raw) == original


def test_entry_fields_added_later_have_defaults() -> None:
    fields = entry().to_fields()
    for name in ("task", "completion_tokens", "cut_limit"):
        del fields[name]
    old = Entry.from_fields(fields)
    assert (old.task, old.completion_tokens, old.cut_limit) == ("", 0, COMPLETE)
    as_text = {**entry().to_fields(), "response": '{"a":1}', "hits": "4.0"}
    again = Entry.from_fields(as_text)
    assert again.response == b'{"a":1}' and again.hits == 4


@pytest.mark.parametrize(("tokens", "cut_limit", "limit", "fits"), [
    (10, COMPLETE, None, True),
    (10, COMPLETE, 10, True),
    (10, COMPLETE, 9, False),
    (10, COMPLETE, 1000, True),
    (0, COMPLETE, 1, True),
    (50, 50, 50, True),      # cut short by 50: only for a request limited to 50
    (50, 50, 51, False),
    (50, 50, None, False),
    (50, 0, None, True),     # cut without a limit (finish_reason length at the model's cap)
    (50, 0, 0, True),
    (50, 0, 50, False),
])
def test_entry_fits(tokens: int, cut_limit: int, limit: int | None, fits: bool) -> None:
    assert entry(completion_tokens=tokens, cut_limit=cut_limit).fits(limit) is fits


def test_least_valuable_evicts_lowest_savings_then_oldest() -> None:
    entries = [entry("never-hit-new", created=5), entry("valuable", hits=10, cost=1.0),
               entry("never-hit-old", created=1), entry("cheap-hits", hits=10, cost=0.01)]
    assert [e.id for e in least_valuable(entries, 2)] == ["never-hit-old", "never-hit-new"]
    assert [e.id for e in least_valuable(entries, 1)] == [
        "never-hit-old", "never-hit-new", "cheap-hits"]
    assert least_valuable(entries, 4) == []
    assert least_valuable(entries, 10) == []
    assert least_valuable([], 0) == []
    assert len(least_valuable(entries, 0)) == 4


@pytest.mark.parametrize(("max_size", "target"), [(1, 1), (19, 19), (20, 19), (100, 95),
                                                  (1000, 950)])
def test_eviction_target_leaves_headroom_below_max_size(max_size: int, target: int) -> None:
    assert eviction_target(max_size) == target
    assert 0 < eviction_target(max_size) <= max_size


def test_tightened_round_trips_as_text_fields() -> None:
    tightened = Tightened("p", 0.97, 1234.5, "shared:team", "sales", "gpt")
    fields = tightened.as_fields()
    assert tuple(fields) == TIGHTENED_FIELDS
    assert all(isinstance(v, str) for v in fields.values())
    assert Tightened.from_fields(fields) == tightened
