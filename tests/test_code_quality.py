"""The house style's checks run with the tests: ruff on everything, mypy --strict and bandit on
proxy/, and every import of proxy/ declared as a runtime dependency."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

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


def test_bandit_is_clean_on_proxy() -> None:
    """Security lint: every accepted finding carries `# nosec <id> # <reason>` on its line; the
    one check skipped for the whole tree (B101, asserts) says why in pyproject.toml."""
    result = run("bandit", "-c", "pyproject.toml", "-r", "proxy", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"proxy", "__future__"}


def test_runtime_imports_are_declared_dependencies() -> None:
    """Whatever proxy/ imports must be a runtime dependency, not something that arrives by
    accident with another package (httpx came with the test tools, anyio with starlette)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # an opt-in feature's extra counts (`train`: `meterline cache-train`, which says so when it
    # is missing); the test and dev tools do not
    extras = [spec for name, specs in project["optional-dependencies"].items()
              if name not in ("test", "dev") for spec in specs]
    declared = {_normalise(Requirement(spec).name) for spec in [*project["dependencies"], *extras]}
    owners = metadata.packages_distributions()
    missing = {module: owners.get(module, [module])
               for module in _imported_top_level_modules(REPO / "proxy")
               if not declared & {_normalise(d) for d in owners.get(module, [module])}}
    assert missing == {}, f"imported by proxy/ but not in [project] dependencies: {missing}"
