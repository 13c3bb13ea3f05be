"""Config load: names in scopes that nothing can match are warned about (errors with --strict)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proxy.__main__ import main
from proxy.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_config(REPO / "rules").warnings == ()
    assert main(["check-config", "--strict", str(REPO / "rules")]) == 0
    assert capsys.readouterr().err == ""


EXPERIMENT = """experiments:
  small:
    control: gpt-4o-mini
    variant: gpt-4.1-mini
    split: 0.5
    scope: {%s}
"""

SCOPES = [
    ("experiments.yaml", EXPERIMENT % "department: [support]",
     "field 'experiments.small.scope.department' has value 'support': no such department"),
    ("experiments.yaml", EXPERIMENT % "model: [gpt-9]",
     "field 'experiments.small.scope.model' has value 'gpt-9': no such model"),
    ("routing.yaml", "rules: [{name: code-review, match: {department: [legal]}, target: gpt-4o}]\n",
     "field 'rules[0].match.department' has value 'legal': no such department"),
    ("routing.yaml", "rules: [{name: code-review, match: {model: ['claude-*']}, target: gpt-4o}]\n",
     "field 'rules[0].match.model' has value 'claude-*': matches no model"),
]


@pytest.mark.parametrize("file,content,warning", SCOPES, ids=[s[2].split("'")[1] for s in SCOPES])
def test_scope_naming_nothing_is_a_warning_and_strict_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, content: str,
        warning: str) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / file).write_text(content)
    config = load_config(rules)
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith(f"{rules / file}: {warning}")
    assert main(["check-config", str(rules)]) == 0
    assert f"warning: {rules / file}: {warning}" in capsys.readouterr().err
    assert main(["check-config", "--strict", str(rules)]) == 1
    assert warning in capsys.readouterr().err
