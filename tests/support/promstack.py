"""Start real Prometheus and Alertmanager binaries on 127.0.0.1 for end-to-end tests.

Both run from a temp dir with short intervals (scrape/evaluation 1s, alert resend 1s,
group_wait/group_interval 1s), load the repository's rules and Alertmanager config, and send
Slack notifications to the URL given (normally a
:class:`tests.support.slack_standin.SlackStandin`).

    with PromStack.start(tmp_path, scrape_target="127.0.0.1:8000",
                         slack_url=slack.url) as stack:
        stack.prometheus.query('up{job="meterline"}')
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = tuple(sorted((REPO_ROOT / "rules" / "prometheus").glob("*.yml")))
ALERTMANAGER_CONFIG = REPO_ROOT / "rules" / "alertmanager.yml"
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"none of {names} on PATH")


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@dataclass
class Service:
    """One running binary: its base URL, work dir and process."""

    name: str
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log()[-3000:]}")


@dataclass
class Prometheus(Service):
    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result: list[dict[str, Any]] = http_json(url)["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = http_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return alerts


@dataclass
class Alertmanager(Service):
    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = http_json(f"{self.url}/api/v2/alerts")
        return alerts

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        http_json(f"{self.url}/api/v2/alerts", alerts)


def _launch(name: str, command: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("wb")
    with log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def alertmanager_config(slack_url_file: Path, source: Path = ALERTMANAGER_CONFIG) -> dict[str, Any]:
    """The repository config with the Slack URL file swapped and every wait shortened."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["global"]["slack_api_url_file"] = str(slack_url_file)
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return config


def start_alertmanager(workdir: Path, slack_url: str) -> Alertmanager:
    workdir.mkdir(parents=True, exist_ok=True)
    url_file = workdir / "slack-webhook-url"
    url_file.write_text(slack_url + "\n")
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(alertmanager_config(url_file)))
    port = free_port()
    command = [
        binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={config_file}", f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ]
    service = Alertmanager("alertmanager", f"http://127.0.0.1:{port}", workdir,
                           _launch("alertmanager", command, workdir))
    service.wait_ready()
    return service


def prometheus_config(scrape_target: str, alertmanager: str | None,
                      rule_files: tuple[Path, ...] = RULE_FILES,
                      more_targets: tuple[str, ...] = ()) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "meterline",
                            "static_configs": [{"targets": [scrape_target, *more_targets]}]}],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def start_prometheus(workdir: Path, scrape_target: str, alertmanager_url: str | None = None,
                     rule_files: tuple[Path, ...] = RULE_FILES,
                     more_targets: tuple[str, ...] = ()) -> Prometheus:
    """Prometheus scraping ``scrape_target`` (host:port), and ``more_targets`` (e.g. the MCP
    server), as job ``meterline``."""
    workdir.mkdir(parents=True, exist_ok=True)
    am_host = urllib.parse.urlsplit(alertmanager_url).netloc if alertmanager_url else None
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus_config(scrape_target, am_host, rule_files,
                                                           more_targets)))
    port = free_port()
    command = [
        binary("prometheus"), f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        # Alerts sent before Alertmanager is discovered are dropped; resend them quickly.
        "--rules.alert.resend-delay=1s",
    ]
    service = Prometheus("prometheus", f"http://127.0.0.1:{port}", workdir,
                         _launch("prometheus", command, workdir))
    service.wait_ready()
    return service


@dataclass
class PromStack:
    """Prometheus wired to Alertmanager wired to a Slack URL; stop() ends both."""

    prometheus: Prometheus
    alertmanager: Alertmanager

    @classmethod
    def start(cls, workdir: Path, scrape_target: str, slack_url: str) -> PromStack:
        alertmanager = start_alertmanager(workdir / "alertmanager", slack_url)
        try:
            prometheus = start_prometheus(workdir / "prometheus", scrape_target, alertmanager.url)
        except BaseException:
            alertmanager.stop()
            raise
        return cls(prometheus, alertmanager)

    def stop(self) -> None:
        self.prometheus.stop()
        self.alertmanager.stop()

    def __enter__(self) -> PromStack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
