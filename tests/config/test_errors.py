"""Config failures as messages naming file, field and value (proxy/config/errors.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from proxy.config.errors import (
    ConfigError,
    field_path,
    load_model,
    parse_model,
    read_yaml,
)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    fallbacks: list[str] = Field(default_factory=list, max_length=2)


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    rules: list[Rule] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)


@pytest.mark.parametrize(("loc", "path"), [
    ((), "(top level)"),
    (("version",), "version"),
    (("rules", 0, "fallbacks"), "rules[0].fallbacks"),
    (("rules", 2, "fallbacks", 1), "rules[2].fallbacks[1]"),
    (("labels", "eu-west"), "labels.eu-west"),
    ((0, "name"), "[0].name"),
])
def test_field_path_is_written_in_yaml_terms(loc: tuple[int | str, ...], path: str) -> None:
    assert field_path(loc) == path


def test_read_yaml(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("name: café\nitems: [1, 2]\n", encoding="utf-8")
    assert read_yaml(path) == {"name": "café", "items": [1, 2]}
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert read_yaml(empty) is None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_yaml(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: file not found"


@pytest.mark.parametrize("text", ["a: [1, 2", "a: b: c", "\tkey: value",
                                  "!!python/object:os.system x"])
def test_invalid_yaml_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value).startswith(f"{path}: not valid YAML: ")


def test_parse_model_treats_an_empty_file_as_all_defaults() -> None:
    assert parse_model(Rules, None, "rules.yaml") == Rules()


@pytest.mark.parametrize(("data", "message"), [
    ({"version": "two"}, "rules.yaml: field 'version' has value 'two': Input should be a valid "
                         "integer, unable to parse string as an integer"),
    ({"rules": [{"name": "a"}, {"name": "b", "fallbacks": ["x", "y", "z"]}]},
     "rules.yaml: field 'rules[1].fallbacks' has value ['x', 'y', 'z']: List should have at most "
     "2 items after validation, not 3"),
    ({"rules": [{}]}, "rules.yaml: field 'rules[0].name' has value {...}: Field required"),
    ({"colour": "blue"}, "rules.yaml: field 'colour' has value 'blue': Extra inputs are not "
                         "permitted"),
    ([1, 2], "rules.yaml: field '(top level)' has value [1, 2]: Input should be a valid "
             "dictionary or instance of Rules"),
])
def test_validation_errors_name_file_field_and_value(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(Rules, data, "rules.yaml")
    assert str(info.value) == message


def test_every_problem_gets_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(Rules, {"version": "x", "colour": 1, "labels": {"a": "b"}}, "f.yaml")
    lines = str(info.value).splitlines()
    assert [line.split("'")[1] for line in lines] == ["version", "labels.a", "colour"]


def test_long_values_are_shortened() -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(Rules, {"version": "9" * 30 + "x" * 200}, "f.yaml")
    shown = str(info.value).split(" has value ")[1].split(": Input")[0]
    assert len(shown) == 120 and shown.endswith("...")


def test_load_model_reads_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 3\nrules:\n  - name: ünïcode\n", encoding="utf-8")
    assert load_model(Rules, path) == Rules(version=3, rules=[Rule(name="ünïcode")])
    path.write_text("version: 3\nrules: [{name: a, extra: 1}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"field 'rules\[0\]\.extra' has value 1"):
        load_model(Rules, path)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
