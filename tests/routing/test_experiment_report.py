"""Experiment reports as JSON (proxy/routing/experiment_report.py): public model names, number
formatting (no NaN/inf in JSON), intervals, listings with removed experiments, split proposals."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
import yaml

from proxy.config.loader import Config
from proxy.config.providers import ProvidersConfig
from proxy.routing.distributions import t_quantile
from proxy.routing.experiment_report import (
    arm_json,
    estimate_json,
    experiment_json,
    listing_json,
    moments_json,
    public_arms,
    public_names,
    split_json,
)
from proxy.routing.experiment_stats import ArmStats, Estimate, Moments, SplitChange
from proxy.routing.experiments import Experiment, Experiments
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import arm_slice_of


def record(request_id: str, *, provider: str = "openrouter", model_used: str = "m",
           experiment: str | None = None, variant: str | None = None, **more: Any
           ) -> UsageRecord:
    return UsageRecord(request_id=request_id, ts=1.0, department="eng", key_id="k", user=None,
                       endpoint="chat.completions", model_requested="x", model_used=model_used,
                       provider=provider, status=200, experiment=experiment, variant=variant,
                       **more)


def config() -> Config:
    providers = ProvidersConfig.model_validate({
        "providers": {"openrouter": {"base_url": "http://or.test/v1"},
                      "openai": {"base_url": "http://oa.test/v1"}},
        "models": {
            "mixtral-8x7b": {"targets": [{"provider": "openrouter",
                                          "model": "mistralai/mixtral-8x7b-instruct"}]},
            "gpt-4o": {"targets": [{"provider": "openai"},
                                   {"provider": "openrouter", "model": "openai/gpt-4o"}]},
        }})
    return cast(Config, SimpleNamespace(providers=providers))


def test_public_names_map_upstream_models_back() -> None:
    records = [record("1", model_used="mistralai/mixtral-8x7b-instruct"),
               record("2", model_used="openai/gpt-4o"),
               record("3", provider="openai", model_used="gpt-4o"),
               record("4", provider="openai", model_used="mistralai/mixtral-8x7b-instruct"),
               record("5", model_used="unknown/model")]
    named = public_names(config(), records)
    assert [r.model_used for r in named] == [
        "mixtral-8x7b", "gpt-4o", "gpt-4o",
        "mistralai/mixtral-8x7b-instruct",  # that provider does not serve it under that name
        "unknown/model"]
    assert [r.request_id for r in named] == ["1", "2", "3", "4", "5"]
    assert records[0].model_used == "mistralai/mixtral-8x7b-instruct"  # inputs untouched
    arms = public_arms(config(), [arm_slice_of(r) for r in records])
    assert [p.model_used for p in arms] == [r.model_used for r in named]


@pytest.mark.parametrize(("estimate", "expected"), [
    (Estimate(0.123456789123, 0.1, 0.2, 5), {"value": 0.12345679, "low": 0.1, "high": 0.2,
                                             "n": 5}),
    (Estimate(0.5, None, None, 0), {"value": None, "low": None, "high": None, "n": 0}),
    (Estimate(math.nan, -math.inf, math.inf, 3), {"value": None, "low": None, "high": None,
                                                  "n": 3}),
])
def test_estimate_json_never_holds_nan_or_inf(estimate: Estimate,
                                              expected: dict[str, Any]) -> None:
    shown = estimate_json(estimate)
    assert shown == expected
    orjson.dumps(shown)


def test_moments_json_uses_a_student_t_interval() -> None:
    m = Moments.of([10.0, 12.0, 14.0])
    shown = moments_json(m, 0.95)
    half = t_quantile(0.975, 2) * math.sqrt(4.0 / 3)
    assert shown["mean"] == 12.0 and shown["n"] == 3
    assert shown["low"] == pytest.approx(12.0 - half) and shown["high"] == pytest.approx(12 + half)
    wider = moments_json(m, 0.99)
    assert wider["low"] < shown["low"] and wider["high"] > shown["high"]


def test_moments_json_with_too_few_observations() -> None:
    assert moments_json(Moments.of([]), 0.95) == {"mean": None, "low": None, "high": None,
                                                  "n": 0}
    assert moments_json(Moments.of([7.0]), 0.95) == {"mean": 7.0, "low": None, "high": None,
                                                     "n": 1}


def test_arm_json_has_every_metric() -> None:
    arm = ArmStats.of("variant", [record("1", latency_ms=100.0, cost_nanos=10**9),
                                  record("2", latency_ms=300.0, error="timeout")])
    shown = arm_json(arm, "gpt-4o", 0.95)
    assert (shown["model"], shown["n"], shown["errors"]) == ("gpt-4o", 2, 1)
    assert set(shown) == {"model", "n", "errors", "error_rate", "latency_ms", "ttft_ms",
                          "cost_usd", "input_tokens", "output_tokens", "quality"}
    assert shown["error_rate"]["value"] == 0.5
    assert shown["quality"]["mean"] is None  # no feedback yet
    orjson.dumps(shown)


def experiment(**fields: Any) -> Experiment:
    return Experiment.model_validate({"name": "cheap", "control": "gpt-4o",
                                      "variant": "mixtral-8x7b", "split": 0.25, **fields})


def test_experiment_json() -> None:
    shown = experiment_json(experiment(scope={"task": ["summarise"]},
                                       start="2025-06-01T00:00:00Z"), time.time())
    assert shown["configured"] is True and shown["status"] == "running"
    assert shown["variants"] == [{"name": "control", "model": "gpt-4o", "weight": 0.75},
                                 {"name": "variant", "model": "mixtral-8x7b", "weight": 0.25}]
    assert shown["scope"] == {"task": ["summarise"]}
    assert shown["start"] == "2025-06-01T00:00:00+00:00" and shown["stop"] is None
    assert shown["auto"]["enabled"] is False
    assert experiment_json(None, 0.0) == {"configured": False, "status": "removed"}
    assert experiment_json(experiment(enabled=False), 0.0)["status"] == "disabled"


def test_listing_counts_arms_and_keeps_removed_experiments() -> None:
    experiments = Experiments(experiments={"cheap": experiment(), "idle": experiment(name="idle")})
    records = [record("1", experiment="cheap", variant="control"),
               record("2", experiment="cheap", variant="variant"),
               record("3", experiment="cheap", variant="variant"),
               record("4", experiment="old", variant="b"),
               record("5", experiment="cheap"),  # no arm: not counted
               record("6")]
    slices = [arm_slice_of(r) for r in records]
    listing = listing_json(experiments, slices, 7.0)
    assert [(e["experiment"], e["configured"], e["n"], e["requests_by_arm"]) for e in listing] == [
        ("cheap", True, 3, {"control": 1, "variant": 2}),
        ("idle", True, 0, {}),
        ("old", False, 1, {"b": 1})]
    assert all(e["window_days"] == 7.0 for e in listing)
    assert [e["experiment"] for e in listing_json(None, slices, 1.0)] == ["cheap", "old"]


def test_split_json_gives_yaml_only_for_a_move() -> None:
    moved = split_json(SplitChange("cheap", 0.25, 0.35, "variant is cheaper"))
    assert moved["yaml"] is not None
    assert yaml.safe_load(moved["yaml"]) == {"experiments": {"cheap": {"split": 0.35}}}
    assert (moved["old_split"], moved["new_split"], moved["reason"]) == (
        0.25, 0.35, "variant is cheaper")
    kept = split_json(SplitChange("cheap", 0.25, 0.25, "auto split is off"))
    assert kept["yaml"] is None
