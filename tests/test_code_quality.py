"""The house style's checks run with the tests: ruff on everything, mypy --strict on proxy/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "proxy", "tests", "scripts", "dashboards", "loadtest")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_proxy() -> None:
    result = run("mypy", "--strict", "proxy")
    assert result.returncode == 0, result.stdout + result.stderr
