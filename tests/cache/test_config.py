"""rules/cache.yaml as typed settings (proxy/cache/config.py): validation, owners, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cache.config import CacheConfig, check_references, load_cache_config
from proxy.config.errors import ConfigError


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_shipped_cache_yaml_loads() -> None:
    config = load_cache_config(Path(__file__).resolve().parents[2] / "rules" / "cache.yaml")
    assert isinstance(config, CacheConfig)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cache.yaml"
    path.write_text("", encoding="utf-8")
    assert load_cache_config(path) == CacheConfig()
    assert CacheConfig().enabled is False


@pytest.mark.parametrize(("data", "field", "shown"), [
    ({"threshold": 1.5}, "threshold", "1.5"),
    ({"threshold": -0.1}, "threshold", "-0.1"),
    ({"mode": "fuzzy"}, "mode", "'fuzzy'"),
    ({"ttl_seconds": 0}, "ttl_seconds", "0"),
    ({"max_size": 0}, "max_size", "0"),
    ({"top_k": 51}, "top_k", "51"),
    ({"backend": "memcached"}, "backend", "'memcached'"),
    ({"index_algorithm": "ivf"}, "index_algorithm", "'ivf'"),
    ({"colour": "blue"}, "colour", "'blue'"),
    ({"overrides": {"departments": {"sales": {"threshold": 2}}}},
     "overrides.departments.sales.threshold", "2"),
    ({"overrides": {"models": {"m": {"unknown": 1}}}}, "overrides.models.m.unknown", "1"),
    ({"dynamic_ttl": {"growth": 0.5}}, "dynamic_ttl.growth", "0.5"),
    ({"display": {"chars": 4}}, "display.chars", "4"),
    ({"report": {"tighten_step": 0.5}}, "report.tighten_step", "0.5"),
    ({"coalesce": {"max_wait_seconds": 0}}, "coalesce.max_wait_seconds", "0"),
    ({"judge": {"timeout_seconds": 0}}, "judge.timeout_seconds", "0"),
    ({"judge": {"max_candidates": 5}}, "judge.max_candidates", "5"),
    ({"judge": {"floor": 1.2}}, "judge.floor", "1.2"),
    ({"judge": {"prompt": "x"}}, "judge.prompt", "'x'"),
    ({"overrides": {"departments": {"sales": {"judge": "maybe"}}}},
     "overrides.departments.sales.judge", "'maybe'"),
    ({"shared_scopes": {"team": {"departments": ["sales"]}}},
     "shared_scopes.team.departments", "['sales']"),
])
def test_bad_values_name_file_field_and_value(tmp_path: Path, data: Any, field: str,
                                              shown: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_cache_config(path)
    assert f"{path}: field '{field}' has value {shown}" in str(info.value)


@pytest.mark.parametrize(("data", "message"), [
    ({"dynamic_ttl": {"min_seconds": 100, "max_seconds": 10}},
     "Config 'max_seconds' has value 10.0. Must be >= min_seconds (100.0)."),
    ({"embedder": {"kind": "openai"}}, "'embedder.openai' (base_url, model, dim) is missing"),
    ({"match": {"threshold": 0.9}}, "Config 'match.threshold' is not used"),
    ({"shared_scopes": {"a": {"departments": ["x", "y"]}, "b": {"departments": ["y", "z"]}}},
     "Config 'shared_scopes.b.departments' has value 'y': already shared in scope 'a'."),
    ({"judge": {"enabled": True}},
     "Config 'judge.enabled' has value True but 'judge.model' is missing."),
    ({"overrides": {"departments": {"sales": {"judge": True}}}},
     "Config 'overrides.departments.sales.judge' has value True but 'judge.model' is missing."),
    ({"threshold": 0.9, "judge": {"enabled": True, "model": "m", "floor": 0.9}},
     "Config 'judge.floor' has value 0.9. Must be < threshold (0.9)."),
])
def test_cross_field_rules(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_cache_config(write(tmp_path, data))
    assert message in str(info.value)


def test_a_judge_that_is_off_needs_no_model_and_no_band() -> None:
    config = CacheConfig.model_validate({"threshold": 0.8, "judge": {"floor": 0.85}})
    assert config.judge.enabled is False and config.effective("eng", "m", None).judge is False


def test_the_judge_switch_per_department() -> None:
    config = CacheConfig.model_validate({
        "judge": {"model": "gpt-4o-mini"},
        "overrides": {"departments": {"legal": {"judge": True}},
                      "routes": {"secret": {"judge": False}}}})
    assert config.effective("eng", "m", None).judge is False
    assert config.effective("legal", "m", None).judge is True
    assert config.effective("legal", "m", "secret").judge is False


def test_openai_embedder_with_settings_is_accepted() -> None:
    config = CacheConfig.model_validate({"embedder": {"kind": "openai", "openai": {
        "base_url": "http://x/v1", "model": "e", "dim": 8}}})
    assert config.embedder.openai is not None and config.embedder.openai.dim == 8


def test_owner_of() -> None:
    config = CacheConfig.model_validate(
        {"shared_scopes": {"support": {"departments": ["help", "sales"]}}})
    assert config.owner_of("sales") == "shared:support"
    assert config.owner_of("help") == "shared:support"
    assert config.owner_of("eng") == "eng"
    assert config.owner_of(None) == "admin"
    assert config.owner_of("") == "admin"


def test_effective_applies_department_then_model_then_route() -> None:
    config = CacheConfig.model_validate({
        "enabled": True, "threshold": 0.9, "ttl_seconds": 100,
        "overrides": {
            "departments": {"sales": {"threshold": 0.8, "ttl_seconds": 50, "max_size": 7}},
            "models": {"gpt": {"threshold": 0.85, "mode": "exact"}},
            "routes": {"secret": {"enabled": False}},
        }})
    base = config.effective("eng", "other", None)
    assert (base.enabled, base.mode, base.threshold, base.ttl_seconds, base.max_size) == (
        True, "semantic", 0.9, 100, 1000)
    dept = config.effective("sales", "other", None)
    assert (dept.threshold, dept.ttl_seconds, dept.max_size) == (0.8, 50, 7)
    both = config.effective("sales", "gpt", None)
    assert (both.threshold, both.mode, both.ttl_seconds) == (0.85, "exact", 50)
    routed = config.effective("sales", "gpt", "secret")
    assert routed.enabled is False and routed.threshold == 0.85
    assert config.effective(None, "other", "unknown-route") == base


def test_check_references_names_unknown_names() -> None:
    config = CacheConfig.model_validate({
        "overrides": {"departments": {"sales": {}, "ghost": {}}, "models": {"nope": {}},
                      "routes": {"r1": {}}},
        "shared_scopes": {"team": {"departments": ["sales", "phantom"]}}})
    problems = check_references(config, Path("cache.yaml"), ["sales", "eng"], ["gpt"], ["r1"])
    assert problems == [
        "cache.yaml: field 'overrides.departments.ghost' has value 'ghost': "
        "not one of ['eng', 'sales']",
        "cache.yaml: field 'overrides.models.nope' has value 'nope': not one of ['gpt']",
        "cache.yaml: field 'shared_scopes.team.departments' has value 'phantom': "
        "not one of ['eng', 'sales']",
    ]
    assert check_references(CacheConfig(), Path("c"), [], [], []) == []
    judged = CacheConfig.model_validate({"judge": {"model": "gpt-9"}})
    assert check_references(judged, Path("cache.yaml"), [], ["gpt"], []) == [
        "cache.yaml: field 'judge.model' has value 'gpt-9': not one of ['gpt']"]
