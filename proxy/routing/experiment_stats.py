"""Experiment results, confidence intervals, verdicts, MODEL_AB_TESTS export, routing advice.

Pure functions over arm statistics (`proxy.spend.rollups.ArmSlice`: exact integer counts, sums
and sums of squares per arm and hour/day/month, read from the spend store's rollups, or made from
`UsageRecord`s by the record-based wrappers `summarize` and `recommend`). Means get Student-t
intervals, differences of means Welch intervals, error rates Wilson intervals and their
differences Newcombe's hybrid score interval.
Nothing here changes configuration: recommendations are proposals with a YAML snippet, and
`auto_split` only returns the split it would use and why.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any, Literal

import orjson
import yaml

from proxy.routing.distributions import t_quantile
from proxy.routing.experiments import CONTROL, Experiment
from proxy.routing.rules import DEFAULT_RULE, RoutingRules
from proxy.spend.pricing import NANOS_PER_DOLLAR
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import (
    ARM_HEAD,
    ARM_WIDTH,
    DAY,
    MICROS_PER_MS,
    MOMENT_WIDTH,
    MOMENTS,
    QUALITY_SCALE,
    ArmSlice,
    arm_slice_of,
    unlimb,
)

AB_COLUMNS = ("experiment_id", "user_id", "model_used", "task_type", "response_time_ms", "cost",
              "quality_score", "timestamp")
QualityStatus = Literal["significantly better", "significantly worse",
                        "no measurable quality loss", "not significant yet", "no feedback yet"]


# ---- estimates -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with a confidence interval; bounds are None when n is too small."""

    value: float
    low: float | None
    high: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


@dataclass(frozen=True, slots=True)
class Moments:
    n: int
    mean: float
    var: float  # sample variance (n - 1)

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        n = len(values)
        mean = math.fsum(values) / n if n else 0.0
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(n, mean, var)

    @classmethod
    def of_sums(cls, n: int, total: int, square: int, scale: int) -> Moments:
        """From a count, an integer sum and sum of squares of values x scale: exact up to the
        final division (Python integers do not overflow)."""
        mean = total / (n * scale) if n else 0.0
        var = (n * square - total * total) / (n * (n - 1) * scale * scale) if n > 1 else 0.0
        return cls(n, mean, var)


def _tail(confidence: float) -> float:
    return 1 - (1 - confidence) / 2


def welch_diff(a: Moments, b: Moments, confidence: float = 0.95) -> Estimate:
    """b.mean - a.mean with a Welch-Satterthwaite t interval."""
    diff, n = b.mean - a.mean, a.n + b.n
    if a.n < 2 or b.n < 2:
        return Estimate(diff, None, None, n)
    va, vb = a.var / a.n, b.var / b.n
    if va + vb == 0:
        return Estimate(diff, diff, diff, n)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = t_quantile(_tail(confidence), df) * math.sqrt(va + vb)
    return Estimate(diff, diff - half, diff + half, n)


def wilson(k: int, n: int, confidence: float = 0.95) -> Estimate:
    if n == 0:
        return Estimate(0.0, None, None, 0)
    z, p = NormalDist().inv_cdf(_tail(confidence)), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact bounds at the edges
    high = 1.0 if k == n else min(1.0, centre + half)
    return Estimate(p, low, high, n)


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> Estimate:
    """p2 - p1 with Newcombe's hybrid score interval built from two Wilson intervals."""
    a, b = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    if a.low is None or a.high is None or b.low is None or b.high is None:
        return Estimate(b.value - a.value, None, None, n1 + n2)
    diff = b.value - a.value
    low = diff - math.sqrt((b.value - b.low) ** 2 + (a.high - a.value) ** 2)
    high = diff + math.sqrt((b.high - b.value) ** 2 + (a.value - a.low) ** 2)
    return Estimate(diff, low, high, n1 + n2)


# ---- per-arm aggregation -------------------------------------------------------------------

def failed(record: UsageRecord) -> bool:
    return record.failed


SCALES = {"latency_us": MICROS_PER_MS, "ttft_us": MICROS_PER_MS, "cost_nanos": NANOS_PER_DOLLAR,
          "input_tokens": 1, "output_tokens": 1, "quality": QUALITY_SCALE}


def add_sums(slices: Iterable[ArmSlice]) -> list[int]:
    total = [0] * ARM_WIDTH
    for part in slices:
        for i, value in enumerate(part.sums):
            total[i] += value
    return total


def moments_of(sums: Sequence[int], name: str) -> Moments:
    at = len(ARM_HEAD) + MOMENT_WIDTH * MOMENTS.index(name)
    n, total, *square = sums[at:at + MOMENT_WIDTH]
    return Moments.of_sums(n, total, unlimb(square), SCALES[name])


@dataclass(frozen=True, slots=True)
class ArmStats:
    """One arm (or one model in a group). Latency/cost/tokens are over successful requests."""

    name: str
    n: int
    errors: int
    latency_ms: Moments
    ttft_ms: Moments
    cost: Moments
    input_tokens: Moments
    output_tokens: Moments
    quality: Moments

    @classmethod
    def of(cls, name: str, records: Sequence[UsageRecord]) -> ArmStats:
        return cls.of_slices(name, [arm_slice_of(r) for r in records])

    @classmethod
    def of_slices(cls, name: str, slices: Iterable[ArmSlice]) -> ArmStats:
        sums = add_sums(slices)
        return cls(name, sums[ARM_HEAD.index("requests")], sums[ARM_HEAD.index("errors")],
                   *(moments_of(sums, m) for m in MOMENTS))

    def error_rate(self, confidence: float = 0.95) -> Estimate:
        return wilson(self.errors, self.n, confidence)


@dataclass(frozen=True, slots=True)
class Comparison:
    """`arm` against the control arm; differences are arm minus control."""

    arm: str
    cost_change: float | None  # relative, -0.41 = 41 % cheaper
    cost: Estimate
    latency_ms: Estimate
    ttft_ms: Estimate
    quality: Estimate
    error_rate: Estimate
    quality_status: QualityStatus
    verdict: str


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    experiment: str
    n: int
    arms: dict[str, ArmStats]
    comparisons: tuple[Comparison, ...]


def quality_status(diff: Estimate, margin: float) -> QualityStatus:
    if diff.low is None or diff.high is None:
        return "no feedback yet"
    if diff.low > 0:
        return "significantly better"
    if diff.high < 0:
        return "significantly worse"
    return "no measurable quality loss" if diff.low >= -margin else "not significant yet"


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f} %"


def verdict(arm: str, cost_change: float | None, quality: Estimate, status: QualityStatus,
            errors: Estimate, n: int) -> str:
    if cost_change is None:
        parts = [f"{arm}: cost unknown"]
    elif abs(cost_change) < 0.005:
        parts = [f"{arm} costs the same"]
    else:
        parts = [f"{arm} is {_pct(cost_change)} "
                 f"{'cheaper' if cost_change < 0 else 'more expensive'}"]
    if quality.half_width is None:
        parts.append("no quality feedback yet")
    else:
        parts.append(f"quality {quality.value:+.2f} ± {quality.half_width:.2f}, {status}")
    if errors.excludes_zero():
        parts.append(f"error rate {errors.value * 100:+.1f} points (significant)")
    return f"{', '.join(parts)} — n={n}"


def compare(control: ArmStats, arm: ArmStats, confidence: float = 0.95,
            margin: float = 0.02) -> Comparison:
    quality = welch_diff(control.quality, arm.quality, confidence)
    errors = newcombe_diff(control.errors, control.n, arm.errors, arm.n, confidence)
    base = control.cost.mean
    change = (arm.cost.mean - base) / base if base > 0 and arm.cost.n else None
    status = quality_status(quality, margin)
    return Comparison(
        arm.name, change, welch_diff(control.cost, arm.cost, confidence),
        welch_diff(control.latency_ms, arm.latency_ms, confidence),
        welch_diff(control.ttft_ms, arm.ttft_ms, confidence), quality, errors, status,
        verdict(arm.name, change, quality, status, errors, control.n + arm.n),
    )


def summarize(records: Iterable[UsageRecord], experiment: str, control: str = CONTROL,
              confidence: float = 0.95, margin: float = 0.02) -> ExperimentResult:
    """summarize_arms over the records' own arm statistics."""
    return summarize_arms([arm_slice_of(r) for r in records], experiment, control, confidence,
                          margin)


def summarize_arms(slices: Iterable[ArmSlice], experiment: str, control: str = CONTROL,
                   confidence: float = 0.95, margin: float = 0.02) -> ExperimentResult:
    """Per-arm stats of one experiment and each arm compared with `control`."""
    by_arm: dict[str, list[ArmSlice]] = defaultdict(list)
    for part in slices:
        if part.experiment == experiment and part.variant:
            by_arm[part.variant].append(part)
    arms = {name: ArmStats.of_slices(name, parts) for name, parts in sorted(by_arm.items())}
    base = arms.get(control)
    comparisons = () if base is None else tuple(
        compare(base, a, confidence, margin) for name, a in arms.items() if name != control)
    return ExperimentResult(experiment, sum(a.n for a in arms.values()), arms, comparisons)


# ---- MODEL_AB_TESTS export -----------------------------------------------------------------

def ab_rows(records: Iterable[UsageRecord], experiment: str | None = None) -> list[dict[str, Any]]:
    """Rows shaped like MODEL_AB_TESTS for records that were part of an experiment."""
    return [
        {
            "experiment_id": r.experiment,
            "user_id": r.user or r.key_id,
            "model_used": r.model_used,
            "task_type": r.task,
            "response_time_ms": round(r.latency_ms, 3),
            "cost": r.cost,
            "quality_score": r.quality_score,
            "timestamp": datetime.fromtimestamp(r.ts, UTC).isoformat(timespec="milliseconds"),
        }
        for r in records
        if r.experiment is not None and (experiment is None or r.experiment == experiment)
    ]


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=AB_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row[k] is None else row[k] for k in AB_COLUMNS} for row in rows)
    return out.getvalue()


def rows_to_json(rows: Sequence[dict[str, Any]]) -> bytes:
    return orjson.dumps(list(rows))


# ---- recommendations and auto split --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Recommendation:
    """A proposed YAML change; never applied by the proxy itself."""

    kind: Literal["route_task", "retarget_rule"]
    key: str  # task name or rule name
    current_model: str
    proposed_model: str
    saves_per_day: float
    randomized: bool  # both models' data came from an experiment (not just observation)
    reason: str
    yaml: str


def _per_day(slices: Sequence[ArmSlice]) -> float:
    """Requests per day over the whole UTC days from the first to the last with traffic (the
    day rollups' resolution)."""
    days = {math.floor(p.start / DAY) for p in slices if p.requests}
    return sum(p.requests for p in slices) / (max(days) - min(days) + 1)


def _mean_cost(slices: Sequence[ArmSlice]) -> float:
    """Dollars per request, failed ones included."""
    requests = sum(p.requests for p in slices)
    cost = sum(p.sums[ARM_HEAD.index("cost_nanos")] for p in slices)
    return cost / (requests * NANOS_PER_DOLLAR) if requests else 0.0


def _current_model(group: Sequence[ArmSlice], by_model: dict[str, list[ArmSlice]],
                   configured: str | None) -> str:
    """The configured target if it has traffic, else the model most used outside treatment arms
    (ties go to the dearer model, the one worth replacing)."""
    if configured in by_model:
        return configured
    usual = [p for p in group if p.variant in ("", CONTROL)] or list(group)
    counts: dict[str, int] = defaultdict(int)
    for p in usual:
        counts[p.model_used] += p.requests
    return max(counts, key=lambda m: (counts[m], _mean_cost(by_model[m])))


def _best_swap(group: Sequence[ArmSlice], configured: str | None, min_n: int, margin: float,
               confidence: float) -> tuple[ArmStats, ArmStats, Comparison, float] | None:
    by_model: dict[str, list[ArmSlice]] = defaultdict(list)
    for p in group:
        by_model[p.model_used].append(p)
    current = _current_model(group, by_model, configured)
    base = ArmStats.of_slices(current, by_model[current])
    best: tuple[ArmStats, ArmStats, Comparison, float] | None = None
    for model, parts in sorted(by_model.items()):
        cand = ArmStats.of_slices(model, parts)
        if model == current or min(cand.quality.n, base.quality.n, cand.n) < min_n:
            continue
        cmp = compare(base, cand, confidence, margin)
        saves = (base.cost.mean - cand.cost.mean) * _per_day(by_model[current])
        worse_errors = cmp.error_rate.excludes_zero() and cmp.error_rate.value > 0
        if (cmp.quality_status in ("no measurable quality loss", "significantly better")
                and saves > 0 and not worse_errors and (best is None or saves > best[3])):
            best = (base, cand, cmp, saves)
    return best


def _yaml_rule(rules: RoutingRules, kind: str, key: str, model: str, current: str) -> str:
    existing = next((r for r in rules.rules if r.name == key), None)
    if kind == "retarget_rule" and existing is not None:
        rule = existing.model_dump(mode="json", exclude_defaults=True)
        fallbacks = [current, *[f for f in existing.fallbacks if f not in (model, current)]]
    else:
        rule, fallbacks = {"name": f"task-{key}-{model}", "match": {"task": [key]}}, [current]
    rule.pop("fallbacks", None)
    rule.update(target=model, fallbacks=fallbacks)
    return str(yaml.safe_dump([rule], sort_keys=False, allow_unicode=True))


def recommend(records: Sequence[UsageRecord], rules: RoutingRules, min_n: int = 30,
              margin: float = 0.02, confidence: float = 0.95) -> list[Recommendation]:
    """recommend_arms over the records' own arm statistics, per day."""
    return recommend_arms([arm_slice_of(r, "d") for r in records], rules, min_n, margin,
                          confidence)


def recommend_arms(slices: Sequence[ArmSlice], rules: RoutingRules, min_n: int = 30,
                   margin: float = 0.02, confidence: float = 0.95) -> list[Recommendation]:
    """Cheaper models with no measurable quality loss, per task and per routing rule, from arm
    statistics per day or finer (`Ledger.arm_usage(..., coarsest="d")`)."""
    groups: dict[tuple[Literal["route_task", "retarget_rule"], str], list[ArmSlice]] = \
        defaultdict(list)
    for p in slices:
        task, rule = p.task, p.route_rule
        if task:
            groups[("route_task", task)].append(p)
        if rule and rule != DEFAULT_RULE:
            groups[("retarget_rule", rule)].append(p)
    targets = {r.name: r.target for r in rules.rules}
    out = []
    for (kind, key), group in sorted(groups.items()):
        configured = targets.get(key) if kind == "retarget_rule" else None
        found = _best_swap(group, configured, min_n, margin, confidence)
        if found is None:
            continue
        base, cand, cmp, saves = found
        pair = {base.name, cand.name}
        randomized = all(p.experiment for p in group if p.model_used in pair and p.requests)
        what = f"task={key}" if kind == "route_task" else f"rule {key}"
        hw = cmp.quality.half_width or 0.0
        reason = (f"route {what} to {cand.name}: saves ${saves:.2f}/day at no measurable quality "
                  f"loss (quality {cmp.quality.value:+.2f} ± {hw:.2f}; ${base.cost.mean:.5f} -> "
                  f"${cand.cost.mean:.5f} per request; n={base.n}/{cand.n}"
                  f"{'' if randomized else '; observational, confirm with an experiment'})")
        out.append(Recommendation(kind, key, base.name, cand.name, round(saves, 4), randomized,
                                  reason, _yaml_rule(rules, kind, key, cand.name, base.name)))
    return sorted(out, key=lambda rec: -rec.saves_per_day)


@dataclass(frozen=True, slots=True)
class SplitChange:
    experiment: str
    old_split: float
    new_split: float
    reason: str


def auto_split(experiment: Experiment, result: ExperimentResult) -> SplitChange:
    """Where the opt-in auto mode would move `split` (share of the variant), within bounds."""
    old = 0.5 if experiment.split is None else experiment.split
    cfg = experiment.auto

    def change(new: float, reason: str) -> SplitChange:
        bounded = round(min(cfg.max_split, max(cfg.min_split, new)), 6)
        return SplitChange(experiment.name, old, bounded, reason)

    cmp = next((c for c in result.comparisons if c.arm != CONTROL), None)
    if not cfg.enabled or experiment.variants is not None:
        return SplitChange(experiment.name, old, old, "auto split is off for this experiment")
    if cmp is None:
        return SplitChange(experiment.name, old, old, "no data for both arms yet")
    worse_errors = cmp.error_rate.excludes_zero() and cmp.error_rate.value > 0
    if cmp.quality_status == "significantly worse" or worse_errors:
        return change(old - cfg.step, f"toward control: {cmp.verdict}")
    cheaper = cmp.cost.excludes_zero() and cmp.cost.value < 0
    if cmp.quality_status == "significantly better" or (
            cheaper and cmp.quality_status == "no measurable quality loss"):
        return change(old + cfg.step, f"toward variant: {cmp.verdict}")
    return SplitChange(experiment.name, old, old, f"no clear winner yet: {cmp.verdict}")
