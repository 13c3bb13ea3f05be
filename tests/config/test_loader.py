"""Config load: light (no embedder runtime or HTTP client imported), cross-file checks, and
warnings for scopes that nothing can match (errors with --strict)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.__main__ import main
from proxy.config.errors import ConfigError
from proxy.config.loader import load_config
from tests.support.servers import REPO_ROOT

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("onnxruntime", "tokenizers", "numpy", "aiohttp", "redisvl")


def test_loading_the_config_imports_no_heavy_runtime() -> None:
    code = ("import sys; from pathlib import Path; from proxy.config.loader import load_config; "
            f"load_config(Path({str(REPO / 'rules')!r})); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO)
    assert result.stdout.strip() == ""


def test_shipped_rules_load() -> None:
    config = load_config(REPO / "rules")
    assert config.departments.names
    assert config.model_names


def test_a_bad_file_names_itself(tmp_path: Path) -> None:
    for item in (REPO / "rules").iterdir():
        if item.is_file():
            (tmp_path / item.name).write_text(item.read_text())
    (tmp_path / "departments.yaml").write_text("departments: [1, 2\n")
    with pytest.raises(ConfigError, match="departments.yaml"):
        load_config(tmp_path)


def test_a_virtual_key_for_an_unknown_provider_is_refused(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "rules", tmp_path, dirs_exist_ok=True)
    raw = yaml.safe_load((tmp_path / "departments.yaml").read_text())
    raw["departments"]["sales"]["virtual_keys"] = {"openia": "VK_SALES"}
    (tmp_path / "departments.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'departments.yaml'}: field 'departments.sales.virtual_keys.openia' names no "
        "provider; known: ['local-vllm', 'openai', 'openrouter']")


def rules_dir(tmp_path: Path, **files: object) -> Path:
    shutil.copytree(REPO_ROOT / "rules", tmp_path, dirs_exist_ok=True)
    for name, content in files.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content))
    return tmp_path


def test_a_rule_sending_a_department_to_a_model_it_may_not_use_is_refused(
        tmp_path: Path) -> None:
    routing = yaml.safe_load((REPO_ROOT / "rules" / "routing.yaml").read_text())
    routing["rules"] += [
        {"name": "fine", "match": {"department": ["sales"]}, "target": "gpt-4o-mini"},
        {"name": "sales-big", "match": {"department": ["sales", "engineering"]},
         "target": "gpt-4.1-mini", "fallbacks": ["gpt-4.1"]}]
    directory = rules_dir(tmp_path, routing=routing)
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    index = len(routing["rules"]) - 1
    assert str(info.value) == (
        f"{directory / 'routing.yaml'}: rule 'sales-big' (field 'rules[{index}].fallbacks') sends "
        "department 'sales' to model 'gpt-4.1', which its allowed_models "
        "['gpt-4o-mini*', 'gpt-4.1-mini*', 'gpt-4.1-nano*', 'text-embedding-3-small'] exclude")


def test_an_experiment_arm_a_department_may_not_use_is_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path, experiments={"experiments": {"sales-ab": {
        "control": "gpt-4o-mini", "variant": "mixtral-8x7b", "split": 0.5,
        "scope": {"department": ["sales"]}}}})
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    assert str(info.value) == (
        f"{directory / 'experiments.yaml'}: experiment 'sales-ab' (field "
        "'experiments.sales-ab.variant') sends department 'sales' to model 'mixtral-8x7b', "
        "which its allowed_models "
        "['gpt-4o-mini*', 'gpt-4.1-mini*', 'gpt-4.1-nano*', 'text-embedding-3-small'] exclude")




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
