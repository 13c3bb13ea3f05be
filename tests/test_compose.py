"""docker-compose.yml starts something usable: an admin key, every provider's credential."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")


def proxy_environment() -> dict[str, str]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    environment: dict[str, str] = services["proxy-1"]["environment"]
    assert services["proxy-2"]["environment"] == environment
    return environment


def variables_the_config_reads() -> set[str]:
    providers = yaml.safe_load((REPO / "rules" / "providers.yaml").read_text())["providers"]
    departments = yaml.safe_load((REPO / "rules" / "departments.yaml").read_text())
    return ({p["api_key_env"] for p in providers.values() if p.get("api_key_env")}
            | {env for d in departments["departments"].values()
               for env in (d.get("virtual_keys") or {}).values()}
            | {departments["notifications"]["slack_webhook_env"]})


def test_proxies_get_an_admin_key_and_every_credential_the_config_reads() -> None:
    environment = proxy_environment()
    for name in variables_the_config_reads() | {"MET_ADMIN_KEY"}:
        assert VARIABLE.findall(str(environment.get(name))) == [name], name
    # without an admin key `up` stops and says how to make one, instead of starting unusable
    assert ":?" in environment["MET_ADMIN_KEY"] and ".env.example" in environment["MET_ADMIN_KEY"]


def test_env_example_names_every_variable_compose_reads() -> None:
    example = (REPO / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert set(VARIABLE.findall(COMPOSE.read_text())) <= named
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False)
    assert ignored.returncode == 0  # the filled-in copy never gets committed


def test_readme_and_compose_header_give_the_same_command() -> None:
    command = "docker compose up --build"
    assert command in COMPOSE.read_text().split("name:", 1)[0]
    readme = (REPO / "README.md").read_text()
    assert command in readme and "`docker compose up`" not in readme
