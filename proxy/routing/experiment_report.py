"""Experiment results, recommendations and auto-split proposals as JSON for the admin API.

Arm statistics come from the spend store's arm rollups (shared by every replica in Redis mode),
over whole UTC hours; only the export reads usage records.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from proxy.config.loader import Config
from proxy.routing.distributions import t_quantile
from proxy.routing.experiment_stats import (
    ArmStats,
    Comparison,
    Estimate,
    ExperimentResult,
    Moments,
    Recommendation,
    SplitChange,
)
from proxy.routing.experiments import Experiment, Experiments, status
from proxy.runtime.services import Services
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import ArmSlice, Granularity

DAY_S = 86_400.0


async def load_records(services: Services, days: float) -> list[UsageRecord]:
    """Usage records of the last `days`, oldest first, with `model_used` as the public name."""
    now = time.time()
    since, until = now - days * DAY_S, now + 1.0
    records: list[UsageRecord] = []
    if services.spend is not None:
        records = await services.spend.records(since, until)
    return public_names(services.config, records)


async def load_arms(services: Services, days: float,
                    coarsest: Granularity = "m") -> list[ArmSlice]:
    """Arm statistics of the last `days`, with the public model name: from the hour that
    contains their start, or per day from the start of that UTC day with `coarsest="d"`."""
    now = time.time()
    since = now - days * DAY_S
    if coarsest == "d":
        since = math.floor(since / DAY_S) * DAY_S
    slices: list[ArmSlice] = []
    if services.spend is not None:
        slices = await services.spend.arm_usage(since, now + 1.0, coarsest)
    return public_arms(services.config, slices)


def public_arms(config: Config, slices: Iterable[ArmSlice]) -> list[ArmSlice]:
    """public_names for arm statistics (their key has the provider and the model used)."""
    public = _public(config)
    return [p if p.model_used in config.providers.models
            else p.named(public.get((p.provider, p.model_used), p.model_used)) for p in slices]


def _public(config: Config) -> dict[tuple[str, str], str]:
    public: dict[tuple[str, str], str] = {}
    for model in config.providers.models:
        for provider, upstream in config.providers.targets_for(model):
            public.setdefault((provider, upstream), model)
    return public


def public_names(config: Config, records: Iterable[UsageRecord]) -> list[UsageRecord]:
    """Records name the upstream model ("mistralai/mixtral-8x7b-instruct"); YAML and reports
    use the public one ("mixtral-8x7b"). Unknown pairs keep what the record says."""
    public = _public(config)
    return [
        r if r.model_used in config.providers.models
        else dataclasses.replace(r, model_used=public.get((r.provider, r.model_used), r.model_used))
        for r in records
    ]


def _num(value: float | None, digits: int = 8) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def estimate_json(est: Estimate) -> dict[str, Any]:
    value = _num(est.value) if est.n else None
    return {"value": value, "low": _num(est.low), "high": _num(est.high), "n": est.n}


def moments_json(m: Moments, confidence: float) -> dict[str, Any]:
    """Mean with a Student-t interval (bounds null below two observations)."""
    low = high = None
    if m.n >= 2:
        half = t_quantile(1 - (1 - confidence) / 2, m.n - 1) * math.sqrt(m.var / m.n)
        low, high = m.mean - half, m.mean + half
    return {"mean": _num(m.mean) if m.n else None, "low": _num(low), "high": _num(high),
            "n": m.n}


def arm_json(arm: ArmStats, model: str | None, confidence: float) -> dict[str, Any]:
    return {
        "model": model, "n": arm.n, "errors": arm.errors,
        "error_rate": estimate_json(arm.error_rate(confidence)),
        "latency_ms": moments_json(arm.latency_ms, confidence),
        "ttft_ms": moments_json(arm.ttft_ms, confidence),
        "cost_usd": moments_json(arm.cost, confidence),
        "input_tokens": moments_json(arm.input_tokens, confidence),
        "output_tokens": moments_json(arm.output_tokens, confidence),
        "quality": moments_json(arm.quality, confidence),
    }


def comparison_json(cmp: Comparison) -> dict[str, Any]:
    return {
        "arm": cmp.arm, "cost_change": _num(cmp.cost_change, 6),
        "cost_usd": estimate_json(cmp.cost), "latency_ms": estimate_json(cmp.latency_ms),
        "ttft_ms": estimate_json(cmp.ttft_ms), "quality": estimate_json(cmp.quality),
        "error_rate": estimate_json(cmp.error_rate), "quality_status": cmp.quality_status,
        "verdict": cmp.verdict,
    }


def experiment_json(experiment: Experiment | None, now: float) -> dict[str, Any]:
    if experiment is None:
        return {"configured": False, "status": "removed"}
    return {
        "configured": True, "status": status(experiment, now), "traffic": experiment.traffic,
        "scope": experiment.scope.model_dump(mode="json", exclude_none=True),
        "variants": [{"name": a.name, "model": a.model, "weight": round(a.weight, 6)}
                 for a in experiment.arms],
        "start": experiment.start.isoformat() if experiment.start else None,
        "stop": experiment.stop.isoformat() if experiment.stop else None,
        "auto": experiment.auto.model_dump(),
    }


def result_json(result: ExperimentResult, experiment: Experiment | None, control: str,
                confidence: float, days: float) -> dict[str, Any]:
    models = {a.name: a.model for a in experiment.arms} if experiment else {}
    verdicts = [c.verdict for c in result.comparisons]
    return {
        "experiment": result.experiment, **experiment_json(experiment, time.time()),
        "window_days": days, "confidence": confidence, "control": control, "n": result.n,
        "arms": {name: arm_json(arm, models.get(name), confidence)
                 for name, arm in result.arms.items()},
        "comparisons": [comparison_json(c) for c in result.comparisons],
        "verdict": "; ".join(verdicts) if verdicts else "not enough data to compare arms yet",
    }


def listing_json(experiments: Experiments | None, slices: Sequence[ArmSlice],
                 days: float) -> list[dict[str, Any]]:
    """Every configured experiment plus ones that only exist in the records (removed since)."""
    counts: dict[str, Counter[str]] = {}
    for p in slices:
        if p.experiment and p.variant and p.requests:
            counts.setdefault(p.experiment, Counter())[p.variant] += p.requests
    configured = experiments.experiments if experiments else {}
    now = time.time()
    names = [*configured, *sorted(set(counts) - set(configured))]
    return [
        {"experiment": name, **experiment_json(configured.get(name), now), "window_days": days,
         "n": sum(counts.get(name, Counter()).values()),
         "requests_by_arm": dict(sorted(counts.get(name, Counter()).items()))}
        for name in names
    ]


def recommendation_json(rec: Recommendation) -> dict[str, Any]:
    return dataclasses.asdict(rec)


def split_json(change: SplitChange) -> dict[str, Any]:
    moved = change.new_split != change.old_split
    snippet = {"experiments": {change.experiment: {"split": change.new_split}}}
    return {
        "experiment": change.experiment, "old_split": change.old_split,
        "new_split": change.new_split, "reason": change.reason,
        "yaml": yaml.safe_dump(snippet, sort_keys=False) if moved else None,
    }
