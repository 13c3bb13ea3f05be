from __future__ import annotations

import csv
import io
from itertools import count
from typing import Any

import orjson
import pytest
import yaml

from proxy.routing.distributions import t_quantile
from proxy.routing.experiment_stats import (
    AB_COLUMNS,
    Estimate,
    Moments,
    ab_rows,
    auto_split,
    newcombe_diff,
    quality_status,
    recommend,
    rows_to_csv,
    rows_to_json,
    summarize,
    welch_diff,
    wilson,
)
from proxy.routing.experiments import Experiments
from proxy.routing.rules import RoutingRules, Rule, parse_config
from proxy.spend.pricing import to_nanos
from proxy.spend.records import UsageRecord

IDS = count()
DAY = 86400.0


def rec(**kw: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "request_id": f"r{next(IDS)}", "ts": 1_750_000_000.0, "department": "sales",
        "key_id": "key-1", "user": "u1", "endpoint": "chat.completions",
        "model_requested": "gpt-4o-mini", "model_used": "gpt-4o-mini", "provider": "openai",
        "status": 200, "latency_ms": 500.0, "ttft_ms": 120.0, "cost_nanos": 10_000_000,
    }
    if "cost" in kw:
        kw["cost_nanos"] = to_nanos(kw.pop("cost"))
    return UsageRecord(**{**base, **kw})


def arm(variant: str, model: str, n: int, cost: float, qualities: tuple[float, float],
        errors: int = 0, **kw: Any) -> list[UsageRecord]:
    return [
        rec(experiment="summary_model", variant=variant, model_used=model, cost=cost,
            task="summary", quality_score=qualities[i % 2], user=f"user-{variant}-{i}",
            status=500 if i < errors else 200, error="upstream_error" if i < errors else None,
            ts=1_750_000_000.0 + i * 600, **kw)
        for i in range(n)
    ]


# Reference values below come from scipy.stats (t.ppf, ttest_ind(equal_var=False)) and from
# Newcombe (1998), Stat Med 17:873, example (56/70 vs 48/80).
@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062047362), (5, 2.5705818356),
                                              (10, 2.2281388520), (30, 2.0422724563),
                                              (1000, 1.9623390808)])
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-8)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-8)


# scipy.stats.t.ppf at large df, where t_quantile uses the expansion (EXPANSION_DF) instead of
# the bisection; and the bisection on both sides of the switch agrees with it
@pytest.mark.parametrize(("df", "p", "expected"), [
    (200, 0.9, 1.2857987939948012), (200, 0.975, 1.9718962236339088),
    (200, 0.9995, 3.3398354062757107), (999.5, 0.975, 1.9623402703838457),
    (5000, 0.9, 1.2817209053357184), (5000, 0.9995, 3.2924737233708825),
    (123456.7, 0.975, 1.9599832001362323), (123456.7, 0.9995, 3.2906055440824478)])
def test_t_quantile_at_large_df_matches_scipy(df: float, p: float, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, rel=1e-9)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, rel=1e-9)


def test_t_quantile_is_continuous_where_it_switches_method() -> None:
    from proxy.routing import distributions

    below = t_quantile(0.9995, distributions.EXPANSION_DF - 1e-9)  # bisection
    at = t_quantile(0.9995, distributions.EXPANSION_DF)  # expansion
    assert at == pytest.approx(below, rel=1e-9)


def test_welch_intervals_on_known_numbers() -> None:
    diff = welch_diff(Moments.of([1.0, 2, 3, 4, 5]), Moments.of([2.0, 4, 6, 8, 10, 12]))
    assert (diff.value, diff.low, diff.high) == pytest.approx((4.0, 0.0165313044, 7.9834686956))
    same = welch_diff(Moments.of([1.0, 1.0]), Moments.of([2.0, 2.0]))
    assert (same.low, same.high) == (1.0, 1.0)


def test_wilson_and_newcombe_on_known_numbers() -> None:
    w = wilson(5, 20)
    assert (w.value, w.low, w.high) == pytest.approx((0.25, 0.1118617, 0.4687009), abs=1e-6)
    assert wilson(0, 10).low == 0.0 and wilson(0, 0).low is None
    d = newcombe_diff(48, 80, 56, 70)
    assert (d.value, d.low, d.high) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)


@pytest.mark.parametrize(
    ("low", "high", "status"),
    [(None, None, "no feedback yet"), (0.01, 0.05, "significantly better"),
     (-0.05, -0.01, "significantly worse"), (-0.015, 0.03, "no measurable quality loss"),
     (-0.05, 0.01, "not significant yet")],
)
def test_quality_status(low: float | None, high: float | None, status: str) -> None:
    assert quality_status(Estimate(0.0, low, high, 100), margin=0.02) == status


def test_summary_counts_means_and_the_plain_verdict() -> None:
    records = (arm("control", "gpt-4o-mini", 106, 0.01, (0.74, 0.96))
               + arm("variant", "mixtral-8x7b", 106, 0.0059, (0.72, 0.94))
               + [rec(experiment="other", variant="control")])
    result = summarize(records, "summary_model")
    assert result.n == 212 and set(result.arms) == {"control", "variant"}
    control = result.arms["control"]
    assert (control.n, control.errors, control.cost.mean) == (106, 0, pytest.approx(0.01))
    (cmp,) = result.comparisons
    assert cmp.cost_change == pytest.approx(-0.41)
    assert cmp.quality.half_width == pytest.approx(0.02993, abs=1e-4)
    assert cmp.verdict == (
        "variant is 41 % cheaper, quality -0.02 ± 0.03, not significant yet — n=212")


def test_verdict_other_wordings() -> None:
    worse = summarize(arm("control", "a", 100, 0.01, (0.8, 0.9))
                      + arm("variant", "b", 100, 0.02, (0.6, 0.7), errors=20), "summary_model")
    assert worse.comparisons[0].verdict == (
        "variant is 100 % more expensive, quality -0.20 ± 0.01, significantly worse, "
        "error rate +20.0 points (significant) — n=200")
    assert worse.arms["variant"].error_rate().value == pytest.approx(0.2)
    unscored = [rec(experiment="e", variant=v, cost=0.01) for v in ("control", "x") * 5]
    assert summarize(unscored, "e").comparisons[0].verdict == (
        "x costs the same, no quality feedback yet — n=10")
    assert summarize(unscored, "e", control="missing").comparisons == ()


def test_ab_export_rows_csv_and_json() -> None:
    records = [rec(experiment="summary_model", variant="variant", model_used="mixtral-8x7b",
                   task="summary", latency_ms=812.4567, cost=0.0004, quality_score=0.9,
                   ts=1_750_000_000.25),
               rec(experiment="summary_model", variant="control", user=None, quality_score=None),
               rec()]
    rows = ab_rows(records)
    assert [tuple(r) for r in rows] == [AB_COLUMNS, AB_COLUMNS]
    assert rows[0] == {"experiment_id": "summary_model", "user_id": "u1",
                       "model_used": "mixtral-8x7b", "task_type": "summary",
                       "response_time_ms": 812.457, "cost": 0.0004, "quality_score": 0.9,
                       "timestamp": "2025-06-15T15:06:40.250+00:00"}
    assert rows[1]["user_id"] == "key-1"
    parsed = list(csv.DictReader(io.StringIO(rows_to_csv(rows))))
    assert parsed[0]["model_used"] == "mixtral-8x7b" and parsed[1]["quality_score"] == ""
    assert orjson.loads(rows_to_json(rows)) == rows
    assert ab_rows(records, experiment="nope") == []


def test_recommend_cheaper_model_per_task_with_yaml() -> None:
    records = (arm("control", "gpt-4o-mini", 288, 0.002, (0.80, 0.82))
               + arm("variant", "mixtral-8x7b", 288, 0.0005, (0.80, 0.82)))
    rules = RoutingRules()
    (advice,) = recommend(records, rules)
    assert (advice.kind, advice.key, advice.current_model, advice.proposed_model) == (
        "route_task", "summary", "gpt-4o-mini", "mixtral-8x7b")
    # 288 requests on gpt-4o-mini, each $0.0015 dearer than mixtral, from 15:06:40 to 14:56:40
    # two days later: 3 whole UTC days (the day rollups' resolution)
    span_days = 3
    assert advice.saves_per_day == pytest.approx(288 / span_days * 0.0015, rel=1e-3)
    assert advice.randomized is True
    assert advice.reason.startswith(
        "route task=summary to mixtral-8x7b: saves $0.14/day at no measurable quality loss")
    (rule,) = yaml.safe_load(advice.yaml)
    assert list(rule) == ["name", "match", "target", "fallbacks"]
    assert Rule.model_validate(rule).target == "mixtral-8x7b"
    assert rule["match"] == {"task": ["summary"]} and rule["fallbacks"] == ["gpt-4o-mini"]


def test_recommend_nothing_when_quality_drops_or_data_is_thin() -> None:
    drop = (arm("control", "gpt-4o-mini", 200, 0.002, (0.80, 0.82))
            + arm("variant", "mixtral-8x7b", 200, 0.0005, (0.70, 0.72)))
    assert recommend(drop, RoutingRules()) == []
    thin = (arm("control", "gpt-4o-mini", 20, 0.002, (0.8, 0.8))
            + arm("variant", "mixtral-8x7b", 20, 0.0005, (0.8, 0.8)))
    assert recommend(thin, RoutingRules()) == []


def test_recommend_retargets_an_existing_rule() -> None:
    rules = parse_config({"rules": [{"name": "sales-short", "match": {"department": ["sales"]},
                                     "target": "gpt-4o", "fallbacks": ["gpt-4o-mini"]}]},
                         RoutingRules, "t")
    records = [rec(route_rule="sales-short", model_used=m, cost=c, quality_score=q,
                   ts=1_750_000_000.0 + i * 60)
               for i in range(100)
               for m, c, q in (("gpt-4o", 0.01, 0.8 + (i % 2) / 100),
                               ("gpt-4o-mini", 0.001, 0.8 + (i % 2) / 100))]
    (advice,) = recommend(records, rules)
    assert (advice.kind, advice.key, advice.randomized) == ("retarget_rule", "sales-short", False)
    assert "observational" in advice.reason
    (rule,) = yaml.safe_load(advice.yaml)
    assert rule == {"name": "sales-short", "match": {"department": ["sales"]},
                    "target": "gpt-4o-mini", "fallbacks": ["gpt-4o"]}


def _experiment(**auto: Any) -> Any:
    data = {"summary_model": {"control": "gpt-4o-mini", "variant": "mixtral-8x7b", "split": 0.5,
                              "auto": auto}}
    return parse_config({"experiments": data}, Experiments, "t").experiments["summary_model"]


@pytest.mark.parametrize(
    ("variant_cost", "variant_quality", "auto", "new_split", "reason_start"),
    [
        (0.0005, (0.80, 0.82), {"enabled": True, "step": 0.1}, 0.6, "toward variant"),
        (0.0005, (0.80, 0.82), {"enabled": True, "step": 0.5, "max_split": 0.8}, 0.8,
         "toward variant"),
        (0.0005, (0.60, 0.62), {"enabled": True, "step": 0.1}, 0.4, "toward control"),
        (0.0005, (0.60, 0.62), {"enabled": True, "step": 0.4, "min_split": 0.2}, 0.2,
         "toward control"),
        (0.0005, (0.55, 1.00), {"enabled": True}, 0.5, "no clear winner yet"),
        (0.0005, (0.80, 0.82), {"enabled": False}, 0.5, "auto split is off"),
    ],
)
def test_auto_split_moves_within_bounds(variant_cost: float, variant_quality: tuple[float, float],
                                        auto: dict[str, Any], new_split: float,
                                        reason_start: str) -> None:
    records = (arm("control", "gpt-4o-mini", 100, 0.002, (0.80, 0.82))
               + arm("variant", "mixtral-8x7b", 100, variant_cost, variant_quality))
    change = auto_split(_experiment(**auto), summarize(records, "summary_model"))
    assert (change.old_split, change.new_split) == (0.5, new_split)
    assert change.reason.startswith(reason_start)
