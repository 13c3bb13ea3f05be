"""The load test's closing report: the brief's KPIs from the proxy's own numbers and ground truth.

Pure and network-free apart from `scrape` (no locust import), so tests/test_loadtest.py checks it.

- hit rate, exact and semantic: `meterline_cache_requests_total` before vs after the run;
- false-hit rate from ground truth: every answer the upstream produced is remembered with the
  question (catalog rank) that asked for it; a cached answer served to another question is a false
  hit. Hits whose origin was not seen (served before the miss's response arrived) are counted
  apart as unattributed;
- dollars: spent (`meterline_cost_dollars_total`), saved by the cache and by routing
  (`..._cache_saved_...`, `..._routing_saved_...`), and what the traffic would have cost without
  the proxy (the sum);
- client latency and the proxy's own overhead (`x-meterline-overhead-ms`), p50/p95/p99; errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

FAMILIES = {
    "cache": "meterline_cache_requests",
    "cost": "meterline_cost_dollars",
    "cache_saved": "meterline_cache_saved_dollars",
    "routing_saved": "meterline_routing_saved_dollars",
}


def answer_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class GroundTruth:
    """Which question produced each answer, and whether each hit went to that question."""

    origin: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=lambda: {"exact": 0, "semantic": 0})
    false_hits: dict[str, int] = field(default_factory=lambda: {"exact": 0, "semantic": 0})
    unattributed: int = 0
    false_examples: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, cache: str, rank: int, answer: str, prompt: str = "") -> None:
        """One answered request: `cache` is its x-meterline-cache header."""
        key = answer_key(answer)
        if not cache.startswith("hit-"):
            self.origin.setdefault(key, rank)
            return
        kind = "exact" if cache == "hit-exact" else "semantic"
        self.hits[kind] += 1
        source = self.origin.get(key)
        if source is None:
            self.unattributed += 1
        elif source != rank:
            self.false_hits[kind] += 1
            if len(self.false_examples) < 20:
                self.false_examples.append({"kind": kind, "asked_rank": rank,
                                            "answer_from_rank": source, "prompt": prompt[:200]})


def sample_sums(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample of the exposition, by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=10) as response:
        return sample_sums(response.read().decode())


def delta(before: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
          after: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], family: str,
          **labels: str) -> float:
    """Increase of `family`_total over the run, summed over series matching `labels`."""
    name = family + "_total"
    total = 0.0
    for (sample, sample_labels), value in after.items():
        found = dict(sample_labels)
        if sample == name and all(found.get(k) == v for k, v in labels.items()):
            total += value - before.get((sample, sample_labels), 0.0)
    return total


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def build_report(*, workload: Mapping[str, Any], truth: GroundTruth,
                 before: Mapping[Any, float], after: Mapping[Any, float],
                 latencies_ms: Sequence[float], overheads_ms: Sequence[float],
                 requests: int, errors: int) -> dict[str, Any]:
    lookups = delta(before, after, FAMILIES["cache"])
    exact = delta(before, after, FAMILIES["cache"], kind="exact", result="hit")
    semantic = delta(before, after, FAMILIES["cache"], kind="semantic", result="hit")
    spent = delta(before, after, FAMILIES["cost"])
    cache_saved = delta(before, after, FAMILIES["cache_saved"])
    routing_saved = delta(before, after, FAMILIES["routing_saved"])
    without = spent + cache_saved + routing_saved
    hits = sum(truth.hits.values())
    false = sum(truth.false_hits.values())
    return {
        "workload": dict(workload),
        "requests": requests,
        "errors": errors,
        "hit_rate": {
            "cache_lookups": lookups,
            "exact": exact / lookups if lookups else None,
            "semantic": semantic / lookups if lookups else None,
            "total": (exact + semantic) / lookups if lookups else None,
        },
        "false_hits": {
            "hits_seen": hits, "false": false, "unattributed": truth.unattributed,
            "by_kind": dict(truth.false_hits),
            "rate_of_hits": false / hits if hits else None,
            "rate_of_requests": false / requests if requests else None,
            "examples": truth.false_examples,
        },
        "dollars": {
            "spent": spent, "saved_by_cache": cache_saved, "saved_by_routing": routing_saved,
            "without_proxy": without,
            "reduction": (without - spent) / without if without else None,
        },
        "latency_ms": percentiles(latencies_ms),
        "overhead_ms": percentiles(overheads_ms),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ms(values: Mapping[str, float | None]) -> str:
    return " / ".join("n/a" if values[q] is None else f"{values[q]:.1f}"
                      for q in ("p50", "p95", "p99"))


def markdown(report: Mapping[str, Any]) -> str:
    hit, false, dollars = report["hit_rate"], report["false_hits"], report["dollars"]
    lines = [
        "# Meterline load test: KPIs", "",
        "| workload | value |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in report["workload"].items()), "",
        "| KPI | value |", "|---|---:|",
        f"| requests (errors) | {report['requests']:,} ({report['errors']:,}) |",
        f"| hit rate, exact / semantic / total | {_pct(hit['exact'])} / "
        f"{_pct(hit['semantic'])} / {_pct(hit['total'])} |",
        f"| false hits (of hits) | {false['false']:,} of {false['hits_seen']:,} "
        f"({_pct(false['rate_of_hits'])}); unattributed {false['unattributed']:,} |",
        f"| false hits (of requests) | {_pct(false['rate_of_requests'])} |",
        f"| spent / without the proxy | ${dollars['spent']:.6f} / "
        f"${dollars['without_proxy']:.6f} |",
        f"| saved by cache / by routing | ${dollars['saved_by_cache']:.6f} / "
        f"${dollars['saved_by_routing']:.6f} |",
        f"| cost reduction | {_pct(dollars['reduction'])} |",
        f"| client latency p50 / p95 / p99 (ms) | {_ms(report['latency_ms'])} |",
        f"| proxy overhead p50 / p95 / p99 (ms) | {_ms(report['overhead_ms'])} |",
    ]
    return "\n".join(lines) + "\n"


def write(report: Mapping[str, Any], stem: str) -> tuple[str, str]:
    json_path, md_path = stem + "_kpi.json", stem + "_kpi.md"
    with open(json_path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)
    with open(md_path, "w", encoding="utf-8") as out:
        out.write(markdown(report))
    return json_path, md_path


def stream_text(events: Iterable[bytes]) -> str:
    """The answer text of an SSE chat stream (first choice's content deltas)."""
    parts: list[str] = []
    for line in events:
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        for choice in event.get("choices") or []:
            if choice.get("index", 0) == 0:
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)
