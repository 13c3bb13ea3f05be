"""Loading the config is light: `meterline check-config` and every reload read YAML into models
without importing the embedder's runtime or the HTTP client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config.errors import ConfigError
from proxy.config.loader import load_config

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
