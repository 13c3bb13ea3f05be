"""The CLI: check-config names file, field and value; serve refuses invalid config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def config_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rules"
    shutil.copytree(REPO / "rules", dest)
    return dest


def test_shipped_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "rules")]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("file,old,new,expect", [
    ("providers.yaml", "timeout_s: 600", "timeout_s: fast",
     ["providers.yaml", "providers.openai.timeout_s", "'fast'"]),
    ("providers.yaml", "  gpt-4.1:\n    targets: [{provider: openai}]",
     "  gpt-4.1:\n    targets: [{provider: nowhere}]", ["providers.yaml", "nowhere"]),
    ("providers.yaml", "api_key_env: OPENAI_API_KEY",
     "api_key_env: OPENAI_API_KEY\n    api_key: sk-inline", ["providers.yaml", "api_key"]),
    ("keys.yaml", "keys: []",
     "keys: [{id: k1, sha256: '" + "a" * 64 + "', department: legal}]",
     ["keys.yaml", "keys.k1.department", "'legal'"]),
    ("providers.yaml", "\nproviders:", "\nproviders: [", ["providers.yaml", "not valid YAML"]),
])
def test_check_config_names_file_field_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             file: str, old: str, new: str,
                                             expect: list[str]) -> None:
    rules = config_copy(tmp_path)
    text = (rules / file).read_text()
    assert old in text
    (rules / file).write_text(text.replace(old, new, 1))
    assert main(["check-config", str(rules)]) == 1
    err = capsys.readouterr().err
    for fragment in expect:
        assert fragment in err


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    rules = config_copy(tmp_path)
    (rules / "providers.yaml").write_text("providers: {}\nmodels: {}\n")
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(rules),
                             "--port", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid config, not starting" in result.stderr
    assert "providers.yaml" in result.stderr
