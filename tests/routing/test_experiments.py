from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proxy.config.errors import ConfigError
from proxy.routing.experiments import (
    Assignment,
    Experiment,
    Experiments,
    assign,
    assign_variant,
    check_models,
    load,
    plan_targets,
    unit_hash,
)
from proxy.routing.rules import RouteDecision, RouteInput, parse_config

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"user-{i}" for i in range(10_000)]
NOW = datetime(2025, 6, 1, tzinfo=UTC).timestamp()


def experiments(data: dict[str, Any]) -> Experiments:
    return parse_config({"experiments": data}, Experiments, "experiments.yaml")


def one(**body: Any) -> Experiment:
    return experiments({"exp": body}).experiments["exp"]


def req(user: str = "u1", **kw: Any) -> RouteInput:
    defaults: dict[str, Any] = {"model": "gpt-4o-mini", "department": "sales", "messages": [],
                                "task": "summary"}
    return RouteInput(user=user, **{**defaults, **kw})


def share(exp: Experiment, arm: str) -> float:
    picks = [assign_variant(exp, u) for u in USERS]
    return sum(1 for a in picks if a is not None and a.variant == arm) / len(USERS)


def test_unit_hash_is_stable_and_uniformish() -> None:
    # Pinned: the formula must never change between releases, or every user switches arms.
    digest = hashlib.blake2b(b"summary_model\x1farm\x1falice", digest_size=8,
                             person=b"meterline-ab").digest()
    assert unit_hash("summary_model", "arm", "alice") == int.from_bytes(digest, "big") / 2**64
    assert unit_hash("summary_model", "arm", "alice") == pytest.approx(0.2999122764, abs=1e-10)
    draws = [unit_hash("s", "arm", u) for u in USERS]
    assert all(0 <= d < 1 for d in draws)
    deciles = Counter(int(d * 10) for d in draws)
    assert all(abs(deciles[k] - 1000) < 100 for k in range(10))


def test_same_user_same_variant() -> None:
    exp = one(control="gpt-4o-mini", variant="mixtral-8x7b", split=0.5)
    first = [assign_variant(exp, u) for u in USERS[:500]]
    again = [assign_variant(one(control="gpt-4o-mini", variant="mixtral-8x7b", split=0.5), u)
             for u in USERS[:500]]
    assert first == again
    assert {a.variant for a in first if a} == {"control", "variant"}


@pytest.mark.parametrize("split", [0.1, 0.3, 0.5, 0.9])
def test_split_within_one_and_a_half_percent(split: float) -> None:
    exp = one(control="gpt-4o-mini", variant="mixtral-8x7b", split=split)
    assert abs(share(exp, "variant") - split) <= 0.015
    assert abs(share(exp, "control") - (1 - split)) <= 0.015


def test_weighted_variants_follow_weights() -> None:
    exp = one(variants=[{"name": "a", "model": "gpt-4o", "weight": 0.6},
                        {"name": "b", "model": "o3-mini", "weight": 0.3},
                        {"name": "c", "model": "llama-3.1-8b", "weight": 0.1}])
    for arm, weight in {"a": 0.6, "b": 0.3, "c": 0.1}.items():
        assert abs(share(exp, arm) - weight) <= 0.015


def test_traffic_share_enrols_only_that_share() -> None:
    exp = one(control="gpt-4o-mini", variant="mixtral-8x7b", split=0.5, traffic=0.1)
    picks = [assign_variant(exp, u) for u in USERS]
    enrolled = [a for a in picks if a is not None]
    assert abs(len(enrolled) / len(USERS) - 0.1) <= 0.015
    assert abs(sum(a.variant == "variant" for a in enrolled) / len(enrolled) - 0.5) <= 0.05
    wider = one(control="gpt-4o-mini", variant="mixtral-8x7b", split=0.5, traffic=0.3)
    widened = [assign_variant(wider, u) for u in USERS]
    # Raising the rollout only adds users; those already in keep their arm.
    assert all(w == p for p, w in zip(picks, widened, strict=True) if p is not None)


def test_moving_split_only_moves_users_toward_variant() -> None:
    before = one(control="gpt-4o-mini", variant="mixtral-8x7b", split=0.5)
    after = one(control="gpt-4o-mini", variant="mixtral-8x7b", split=0.6)
    pairs = [(assign_variant(before, u), assign_variant(after, u)) for u in USERS]
    moved = [(b.variant, a.variant) for b, a in pairs if a and b and a.variant != b.variant]
    assert set(moved) == {("control", "variant")}
    assert abs(len(moved) / len(USERS) - 0.1) <= 0.015


def test_experiments_are_independent_chi_square() -> None:
    exps = experiments({
        "first": {"control": "gpt-4o-mini", "variant": "mixtral-8x7b", "split": 0.5},
        "second": {"control": "gpt-4o-mini", "variant": "llama-3.1-8b", "split": 0.5},
    }).experiments
    joint = Counter(
        (assign_variant(exps["first"], u).variant, assign_variant(exps["second"], u).variant)  # type: ignore[union-attr]
        for u in USERS
    )
    rows = {a: joint[(a, "control")] + joint[(a, "variant")] for a in ("control", "variant")}
    cols = {b: joint[("control", b)] + joint[("variant", b)] for b in ("control", "variant")}
    chi2 = sum(
        (joint[(a, b)] - rows[a] * cols[b] / len(USERS)) ** 2 / (rows[a] * cols[b] / len(USERS))
        for a in rows for b in cols
    )
    assert chi2 < 10.83  # 1 degree of freedom, p = 0.001


def test_reload_with_changed_unrelated_experiment_keeps_assignments() -> None:
    base = {"summary": {"control": "gpt-4o-mini", "variant": "mixtral-8x7b", "split": 0.5,
                        "scope": {"task": ["summary"]}}}
    chat = {"task": ["chat"]}
    old = experiments({"other": {"control": "gpt-4o", "variant": "o3-mini", "scope": chat},
                       **base})
    new = experiments({"extra": {"control": "gpt-4o", "variant": "o3-mini", "scope": chat},
                       **base,
                       "other": {"control": "gpt-4o", "variant": "gpt-4.1", "split": 0.2,
                                 "scope": chat}})
    users = USERS[:2000]
    assert [assign(old, req(u, task="summary"), NOW) for u in users] == [
        assign(new, req(u, task="summary"), NOW) for u in users]
    salted = experiments({"summary": {**base["summary"], "salt": "v2"}})
    changed = sum(assign(old, req(u), NOW) != assign(salted, req(u), NOW) for u in users)
    assert changed > 600  # a new salt reshuffles about half the users


def test_scope_time_window_and_priority() -> None:
    exps = experiments({
        "later": {"control": "gpt-4o", "variant": "o3-mini",
                  "start": "2026-01-01T00:00:00Z"},
        "sales_only": {"control": "gpt-4o-mini", "variant": "mixtral-8x7b", "split": 1.0,
                       "scope": {"department": ["sales"], "model": ["gpt-4o-mini"]},
                       "stop": datetime(2025, 7, 1)},
        "catch_all": {"control": "gpt-4.1", "variant": "gpt-4.1-mini", "split": 0.0},
    })
    bucket = unit_hash("sales_only", "arm", "u1")
    assert assign(exps, req(), NOW) == Assignment("sales_only", "variant", "mixtral-8x7b", bucket)
    assert assign(exps, req(department="eng"), NOW) == Assignment(
        "catch_all", "control", "gpt-4.1", pytest.approx(unit_hash("catch_all", "arm", "u1")))
    after_stop = datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    assert assign(exps, req(), after_stop).experiment == "catch_all"  # type: ignore[union-attr]
    assert assign(exps, req(), datetime(2026, 2, 1, tzinfo=UTC).timestamp()).experiment == "later"  # type: ignore[union-attr]
    disabled = experiments({"x": {"control": "gpt-4o", "variant": "o3-mini", "enabled": False}})
    assert assign(disabled, req(), NOW) is None


def test_plan_targets_puts_arm_first_without_duplicates() -> None:
    decision = RouteDecision("summaries", "gpt-4o-mini", ("gpt-3.5-turbo",), ())
    arm = Assignment("summary_model", "variant", "mixtral-8x7b", 0.7)
    assert plan_targets(decision, arm) == ("mixtral-8x7b", "gpt-4o-mini", "gpt-3.5-turbo")
    control = Assignment("summary_model", "control", "gpt-4o-mini", 0.1)
    assert plan_targets(decision, control) == ("gpt-4o-mini", "gpt-3.5-turbo")
    assert plan_targets(decision, None) == ("gpt-4o-mini", "gpt-3.5-turbo")


def test_shipped_experiments_yaml_loads() -> None:
    exps = load(ROOT / "rules" / "experiments.yaml")
    check_models(exps, {"gpt-4o-mini", "mixtral-8x7b", "llama-3.1-8b", "gpt-4.1-mini"})
    summary = exps.experiments["summary_model"]
    assert [(a.name, a.model, a.weight) for a in summary.arms] == [
        ("control", "gpt-4o-mini", 0.5), ("variant", "mixtral-8x7b", 0.5)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"control": "a", "variant": "b", "spilt": 0.5},
         "field 'experiments.exp.spilt' has value 0.5: Extra inputs are not permitted"),
        ({"control": "a", "variant": "b", "split": 1.5},
         "field 'experiments.exp.split' has value 1.5: Input should be less than or equal to 1"),
        ({"control": "a"}, "needs control and variant"),
        ({"variants": [{"name": "a", "model": "x", "weight": 0.5},
                       {"name": "b", "model": "y", "weight": 0.4}]},
         "variant weights sum to 0.9, not 1"),
        ({"control": "a", "variant": "b", "variants": []}, "not both"),
        ({"control": "a", "variant": "b", "traffic": -0.1}, "field 'experiments.exp.traffic'"),
        ({"control": "a", "variant": "b", "scope": {"team": ["x"]}},
         "field 'experiments.exp.scope.team' has value ['x']"),
        ({"control": "a", "variant": "b", "start": "2025-02-01", "stop": "2025-01-01"},
         "is not before stop"),
        ({"control": "a", "variant": "b", "name": "other"}, "name is its key"),
    ],
)
def test_invalid_experiments_name_field_and_value(body: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        experiments({"exp": body})
    assert str(err.value).startswith("experiments.yaml: ")
    assert expected in str(err.value)


def test_unknown_model_is_named() -> None:
    exps = experiments({"exp": {"control": "gpt-4o", "variant": "gpt-9"}})
    with pytest.raises(ConfigError, match="'experiments.exp.variant' has value 'gpt-9'"):
        check_models(exps, {"gpt-4o"})
