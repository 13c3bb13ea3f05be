"""Cross-file checks of the config directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from proxy.config.errors import ConfigError
from proxy.config.loader import load_config
from tests.support.servers import REPO_ROOT


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
