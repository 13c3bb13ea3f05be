"""Departments YAML: the shipped file loads; bad values are named with file, field and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config.departments import load_departments, parse_departments
from proxy.config.errors import ConfigError

RULES = Path(__file__).resolve().parents[2] / "rules" / "departments.yaml"


def test_shipped_departments_load_with_the_four_defaults() -> None:
    config = load_departments(RULES)
    assert config.names == ("engineering", "sales", "marketing", "executive")
    sales = config.get("sales")
    assert sales.allows("gpt-4o-mini-2024-07-18") and not sales.allows("gpt-4o")
    assert config.get("engineering").allows("anything")
    assert config.slack_webhook_url({"METERLINE_SLACK_WEBHOOK_URL": "http://x"}) == "http://x"
    assert config.slack_webhook_url({}) is None


def _dept(**fields: Any) -> dict[str, Any]:
    return {"departments": {"eng": fields}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_dept(budgets={"daily": -5}), "field 'departments.eng.budgets.daily' has value -5"),
        (_dept(budgets={"weekly": 5}), "field 'departments.eng.budgets.weekly' has value 5"),
        (_dept(soft_alerts=[1.5]), "threshold 1.5 must be between 0 and 1"),
        (_dept(rpm=0), "field 'departments.eng.rpm' has value 0"),
        (_dept(allowed_models=[]), "list is empty"),
        (_dept(virtual_keys={"openai": "lower"}),
         "field 'departments.eng.virtual_keys.openai' has value 'lower'"),
        (_dept(virtual_key_env="VK_ENG"),  # sent to every provider: refused, with the fix
         r"virtual_key_env \('VK_ENG'\) is no longer read.*virtual_keys: \{openai: VK_ENG\}"),
        (_dept(circuit_breaker={"window_minutes": 0, "max_dollars": 1}),
         "field 'departments.eng.circuit_breaker.window_minutes' has value 0"),
        (_dept(name="other"), "department 'eng' has name 'other'"),
        ({"departments": {"Bad Name": {}}}, "has value 'Bad Name'"),
        ({"departments": {"admin": {}}},
         "'admin' is reserved for the traffic of admin keys"),
        ({"departmnets": {}}, "field 'departmnets'"),
        ([1], "expected a mapping at the top level"),
    ],
)  # fmt: skip
def test_bad_department_fields_are_named(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_departments(raw, source="depts.yaml")
    assert str(info.value).startswith("depts.yaml")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_departments(path)


def test_soft_alerts_are_sorted_and_deduplicated() -> None:
    config = parse_departments(_dept(soft_alerts=[0.9, 0.5, 0.9]))
    assert config.get("eng").soft_alerts == (0.5, 0.9)
