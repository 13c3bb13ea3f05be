"""The compose stack holds together without a Docker daemon: docker-compose.yml, nginx,
Prometheus, Grafana and Alertmanager files are cross-checked against each other and against
what the repository generates, and the Dockerfile installs what the README's set-up installs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DEFAULT = re.compile(r"\$\{[A-Z_]+:-([^}]+)\}")  # ${VAR:-default}


def host_path(source: str) -> Path:
    """A compose source path (maybe `${VAR:-./default}`) on this checkout."""
    match = DEFAULT.fullmatch(source)
    return (ROOT / (match.group(1) if match else source)).resolve()


def binds(service: str) -> dict[str, Path]:
    """Container path -> checkout path of the service's bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "$")):
            mounts[target] = host_path(source)
    return mounts


def in_container(service: str, path: str) -> Path:
    """Where a path inside the service's container comes from in this checkout."""
    wanted = PurePosixPath(path)
    for target, source in sorted(binds(service).items(), key=lambda t: -len(t[0])):
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return source / wanted.relative_to(target)
    raise AssertionError(f"{path} is not mounted into {service}")


def proxy_services() -> list[str]:
    return sorted(n for n, s in SERVICES.items() if s.get("image") == "meterline:local")


def dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", DOCKERFILE)
    assert match, f"Dockerfile sets no {name}"
    return match.group(1)


def command_flag(service: str, flag: str) -> str:
    for arg in SERVICES[service].get("command", []):
        if arg.startswith(flag + "="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"{service} has no {flag}")


def test_every_mounted_file_and_secret_exists() -> None:
    for name in SERVICES:
        for target, source in binds(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    for name, secret in COMPOSE.get("secrets", {}).items():
        assert host_path(secret["file"]).is_file(), f"secret {name}: {secret['file']}"
    for name in proxy_services():
        assert (ROOT / SERVICES[name]["build"] / "Dockerfile").is_file()


def test_nginx_balances_every_replica_and_prometheus_scrapes_each() -> None:
    replicas = proxy_services()
    assert len(replicas) >= 2
    port = dockerfile_env("MET_PORT")
    expected = {f"{name}:{port}" for name in replicas}
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", nginx, re.M)) == expected
    assert set(SERVICES["nginx"]["depends_on"]) >= set(replicas)
    assert binds("nginx")["/etc/nginx/conf.d/default.conf"] == ROOT / "deploy" / "nginx.conf"
    prom_file = in_container("prometheus", command_flag("prometheus", "--config.file"))
    prom = yaml.safe_load(prom_file.read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    targets = {t for sc in jobs["meterline"]["static_configs"] for t in sc["targets"]}
    assert targets == expected  # each replica on its own: a balanced /metrics would mix them
    assert re.search(r"location = /metrics\s*\{\s*return 404;", nginx)
    alertmanagers = {t for am in prom["alerting"]["alertmanagers"]
                     for sc in am["static_configs"] for t in sc["targets"]}
    assert alertmanagers == {"alertmanager:9093"}
    assert "127.0.0.1:9093:9093" in SERVICES["alertmanager"]["ports"]


def test_prometheus_loads_the_rule_files_promtool_tests(tmp_path: Path) -> None:
    prom_file = in_container("prometheus", command_flag("prometheus", "--config.file"))
    prom = yaml.safe_load(prom_file.read_text())
    loaded: set[Path] = set()
    for pattern in prom["rule_files"]:
        directory = in_container("prometheus", str(PurePosixPath(pattern).parent))
        loaded |= {p.resolve() for p in directory.glob(PurePosixPath(pattern).name)}
    tested: set[Path] = set()
    for test_file in (ROOT / "rules" / "prometheus" / "tests").glob("*.yml"):
        spec = yaml.safe_load(test_file.read_text())
        tested |= {(test_file.parent / f).resolve() for f in spec["rule_files"]}
    assert tested and loaded == tested
    # the real promtool on the config, with the rule glob pointed at this checkout
    local = dict(prom, rule_files=[str(p) for p in sorted(loaded)])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    result = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_generated_dashboards_on_the_prometheus_datasource() -> None:
    provisioning = in_container("grafana", "/etc/grafana/provisioning")
    assert provisioning == ROOT / "deploy" / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "meterline.yml").read_text())
    folders = [in_container("grafana", p["options"]["path"]) for p in providers["providers"]]
    assert folders == [ROOT / "dashboards"]
    sources = sorted(ROOT.glob("dashboards/*.dashboard.py"))
    assert sources
    for source in sources:
        generated = source.with_name(source.name.replace(".dashboard.py", ".json"))
        assert generated.is_file(), f"{source.name} has no generated {generated.name}"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [prometheus] = datasources["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in SERVICES["prometheus"]["ports"]


def test_slack_secret_lands_where_alertmanager_reads_it() -> None:
    am_file = in_container("alertmanager", command_flag("alertmanager", "--config.file"))
    assert am_file == ROOT / "rules" / "alertmanager.yml"
    am = yaml.safe_load(am_file.read_text())
    reads = am["global"]["slack_api_url_file"]
    targets = {s["target"] for s in SERVICES["alertmanager"]["secrets"]}
    assert reads in targets


def test_proxies_read_the_config_directory_the_image_and_settings_use() -> None:
    config_dir = dockerfile_env("MET_CONFIG_DIR")
    assert "COPY rules " + config_dir in DOCKERFILE
    for name in proxy_services():
        assert SERVICES[name]["environment"]["MET_CONFIG_DIR"] == config_dir
        assert binds(name)[config_dir] == ROOT / "rules"
        assert "redis://redis-stack:" in SERVICES[name]["environment"]["REDIS_URL"]
    assert "/healthz" in DOCKERFILE


def test_dockerfile_installs_what_the_readme_set_up_installs() -> None:
    """README: `bash scripts/meterline.sh serve --demo` (a venv, `pip install -e .`, then
    `meterline`). The image installs the same dependency list (read from pyproject.toml, not
    copied) and the same package, runs the same command, on the Python the README names."""
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/meterline.sh serve --demo" in readme
    launcher = (ROOT / "scripts" / "meterline.sh").read_text()
    assert 'pip install -q --disable-pip-version-check --no-input -e "$REPO"' in launcher
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "['project']['dependencies']" in DOCKERFILE
    assert "pip install -r /tmp/requirements.txt" in DOCKERFILE
    assert "pip install --no-deps ." in DOCKERFILE
    assert project["scripts"]["meterline"] == "proxy.__main__:main"
    assert re.search(r'^CMD \["meterline", "serve"', DOCKERFILE, re.M)
    python = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE, re.M)
    assert python and f"Python {python.group(1)}" in readme
    assert project["requires-python"] == f">={python.group(1)}"
    copied = set(re.findall(r"^COPY (\S+)", DOCKERFILE, re.M))
    for package_dir in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
            "setuptools"]["packages"]["find"]["include"]:
        assert package_dir.rstrip("*") in copied


@pytest.mark.parametrize("service", ["proxy-1", "proxy-2"])
def test_replicas_get_time_to_drain_on_stop(service: str) -> None:
    grace = SERVICES[service]["stop_grace_period"]
    seconds = int(grace.rstrip("s"))
    assert seconds > 5 + 30  # MET_DRAIN_SECONDS + MET_SHUTDOWN_TIMEOUT_SECONDS defaults
