"""Alert/recording rules, Alertmanager config and dashboards: valid, tested, and only querying
metrics that proxy/metrics.py defines."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.metrics import Metrics
from tests.support.promstack import ALERTMANAGER_CONFIG, RULE_FILES, PromStack, free_port
from tests.support.slack_standin import SlackStandin

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules" / "prometheus"
RULE_TESTS = sorted((RULES_DIR / "tests").glob("*.yml"))
DASHBOARDS_DIR = ROOT / "dashboards"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALWAYS_FIRING = {"MeterlineWatchdog"}
GEN = runpy.run_path(str(ROOT / "scripts" / "gen_dashboards.py"))

PROMQL_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on",
                   "ignoring", "group_left", "group_right", "atan2"}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


# -- collecting expressions ------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def template_queries(text: str) -> list[str]:
    """PromQL inside alert annotation templates: printf `...` | query and query "..."."""
    found = re.findall(r"printf `([^`]*)`", text) + re.findall(r'query "([^"]*)"', text)
    return [q.replace("%q", '"x"') for q in found]


def rule_exprs() -> list[str]:
    exprs = [rule["expr"] for rule in rules()]
    for rule in alert_rules():
        for text in rule["annotations"].values():
            exprs.extend(template_queries(text))
    return exprs


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in DASHBOARDS_DIR.glob("*.json")}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [target["expr"] for board in dashboards().values()
            for panel in panels(board) for target in panel.get("targets", [])]


def without_grafana_vars(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


# -- metric names ----------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels, keywords or strings)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 0.5e-2, durations
            continue
        if text[match.end():].lstrip().startswith("(") or match.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def defined_metric_names() -> set[str]:
    """Series names proxy/metrics.py exports, plus names recorded by rules, plus ``up``."""
    names = {"up"}
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    names.update(rule["record"] for rule in rules() if "record" in rule)
    return names


def undefined_names(exprs: list[str]) -> set[str]:
    defined = defined_metric_names()
    return {name for expr in exprs for name in metric_names(expr)} - defined


# -- promtool --------------------------------------------------------------------------------


def promtool_parse(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Check expressions with promtool by wrapping each in a recording rule."""
    rules_file = tmp_path / "exprs.yml"
    records = [{"record": f"check:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": records}]}))
    return run("promtool", "check", "rules", str(rules_file))


def test_promtool_check_rules() -> None:
    result = run("promtool", "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_rule_unit_tests_pass() -> None:
    result = run("promtool", "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def alert_cases() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                kind = "firing" if check.get("exp_alerts") else "silent"
                entry = counts.setdefault(check["alertname"], {"firing": 0, "silent": 0})
                entry[kind] += 1
    return counts


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = alert_cases()
    for name in {rule["alert"] for rule in alert_rules()}:
        assert cases.get(name, {}).get("firing", 0) >= 1, f"{name} has no firing test case"
        if name not in ALWAYS_FIRING:
            assert cases[name]["silent"] >= 1, f"{name} has no non-firing test case"
    assert set(cases) <= {rule["alert"] for rule in alert_rules()}


def test_firing_cases_pin_labels_and_annotations() -> None:
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts") or []:
                    assert "severity" in alert["exp_labels"], (path.name, case["name"])
                    assert set(alert["exp_annotations"]) == {"summary", "description",
                                                             "runbook_url"}, case["name"]


def test_alerts_have_severity_annotations_and_a_runbook_section() -> None:
    anchors = set(re.findall(r"^## (\S+)$", RUNBOOKS.read_text(), re.MULTILINE))
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Meterline[A-Z][A-Za-z0-9]+", name)
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbooks.md has no '## {name.lower()}'"
    assert anchors == {rule["alert"].lower() for rule in alert_rules()}


def test_rule_and_template_exprs_parse(tmp_path: Path) -> None:
    result = promtool_parse(rule_exprs(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_exprs_parse(tmp_path: Path) -> None:
    exprs = [without_grafana_vars(expr) for expr in dashboard_exprs()]
    assert len(exprs) > 40
    result = promtool_parse(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_expression_checker_rejects_bad_promql(tmp_path: Path) -> None:
    result = promtool_parse(["sum(rate(meterline_requests_total[5m])"], tmp_path)
    assert result.returncode != 0


def test_rules_and_dashboards_query_only_defined_metrics() -> None:
    assert undefined_names(rule_exprs()) == set()
    assert undefined_names(dashboard_exprs()) == set()


@pytest.mark.parametrize(("expr", "undefined"), [
    ("rate(meterline_made_up_total[5m])", {"meterline_made_up_total"}),
    ("meterline_request_duration_seconds > 1", {"meterline_request_duration_seconds"}),
    ("department:meterline_never_recorded:rate5m", {"department:meterline_never_recorded:rate5m"}),
    ('sum by (department) (rate(meterline_cost_dollars_total{model="x"}[$__rate_interval]))',
     set()),
    ("histogram_quantile(0.95, sum by (le) (rate(meterline_overhead_seconds_bucket[5m]))) > 1e-1",
     set()),
])
def test_undefined_metric_is_caught(expr: str, undefined: set[str]) -> None:
    assert undefined_names([expr]) == undefined


def test_metric_names_skips_functions_labels_and_keywords() -> None:
    expr = ('sum by (department) (increase(a_total{x="y b"}[1h] offset 1d)) '
            '> on (department) group_left () b:c and ignoring (le) c')
    assert metric_names(expr) == {"a_total", "b:c", "c"}


# -- Alertmanager ----------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    result = run("amtool", "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=MeterlineWatchdog", "severity=info"], "heartbeat"),
    (["alertname=MeterlineHourlySpendHigh", "department=sales"], "slack"),
    (["alertname=MeterlineProxyDown", "severity=critical"], "slack"),
])
def test_alert_routing(labels: list[str], receiver: str) -> None:
    result = run("amtool", "config", "routes", "test",
                 f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_exhausted_budget_inhibits_burn_rate_per_department() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert config["route"]["group_by"] == ["alertname", "department"]
    assert {"source_matchers": ['alertname="MeterlineBudgetExhausted"'],
            "target_matchers": ['alertname="MeterlineBudgetBurnRate"'],
            "equal": ["department"]} in config["inhibit_rules"]


# -- dashboards ------------------------------------------------------------------------------


def test_committed_dashboards_match_their_source() -> None:
    assert GEN["drifted"]() == []
    assert {p.name.removesuffix(".dashboard.py") for p in GEN["sources"]()} == {
        "overview", "departments", "cache", "experiments"}


def test_drift_check_catches_an_edited_json(tmp_path: Path) -> None:
    copy = tmp_path / "dashboards"
    shutil.copytree(DASHBOARDS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert GEN["main"](["--check", "--dir", str(copy)]) == 0
    edited = copy / "cache.json"
    edited.write_text(edited.read_text().replace("Meterline / Cache", "Hand edited"))
    (copy / "overview.json").unlink()
    assert set(GEN["drifted"](copy)) == {edited, copy / "overview.json"}
    assert GEN["main"](["--check", "--dir", str(copy)]) == 1


def test_dashboards_have_stable_uids_datasource_variable_and_rate_interval() -> None:
    boards = dashboards()
    assert {b["uid"] for b in boards.values()} == {f"meterline-{name}" for name in boards}
    for name, board in boards.items():
        variables = board["templating"]["list"]
        assert variables[0]["name"] == "datasource" and variables[0]["type"] == "datasource"
        for panel in panels(board):
            assert panel["datasource"] == "${datasource}", (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == "${datasource}"
                windows = re.findall(r"\brate\([^\[]*\[([^\]]+)\]", target["expr"])
                assert all(w == "$__rate_interval" for w in windows), target["expr"]


# -- the Prometheus / Alertmanager helpers on real binaries -----------------------------------


class MetricsTarget:
    """Serves a Metrics registry on /metrics for Prometheus to scrape."""

    def __init__(self, metrics: Metrics) -> None:
        render = metrics.render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body, content_type = render()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.25)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[PromStack, SlackStandin, Metrics]]:
    metrics = Metrics(build_version="test")
    metrics.set_known(["sales"], ["gpt-4o"])
    target = MetricsTarget(metrics)
    with SlackStandin() as slack:
        try:
            with PromStack.start(tmp_path, target.address, slack.url) as started:
                yield started, slack, metrics
        finally:
            target.stop()


@pytest.mark.slow
def test_promstack_loads_rules_scrapes_and_notifies_slack(
    stack: tuple[PromStack, SlackStandin, Metrics],
) -> None:
    promstack, slack, metrics = stack
    loaded = {r["name"] for r in promstack.prometheus.rules()}
    assert loaded == {r.get("alert") or r["record"] for r in rules()}

    metrics.record_cost("sales", "gpt-4o", 1.25)
    scraped = eventually(lambda: promstack.prometheus.query(
        'meterline_cost_dollars_total{job="meterline",department="sales"}'))
    assert scraped and float(scraped[0]["value"][1]) == 1.25
    assert promstack.prometheus.query('up{job="meterline"}')[0]["value"][1] == "1"

    watchdog = eventually(lambda: [a for a in promstack.alertmanager.alerts()
                                   if a["labels"]["alertname"] == "MeterlineWatchdog"])
    assert watchdog and watchdog[0]["receivers"] == [{"name": "heartbeat"}]

    promstack.alertmanager.post_alerts([{
        "labels": {"alertname": "MeterlineHourlySpendHigh", "department": "sales",
                   "severity": "warning", "scope": "department"},
        "annotations": {
            "summary": "Department sales spent $12.34 in the last hour",
            "description": "Department sales spent $12.34 in the last hour (threshold $10.00).",
            "runbook_url": "docs/runbooks.md#meterlinehourlyspendhigh"},
    }])
    message = slack.wait_for(lambda m: "MeterlineHourlySpendHigh" in str(m), timeout=30)
    attachment = message["attachments"][0]
    assert attachment["title"] == "[FIRING] MeterlineHourlySpendHigh - department sales"
    assert "Department sales spent $12.34 in the last hour (threshold $10.00)." in attachment[
        "text"]
    assert "docs/runbooks.md#meterlinehourlyspendhigh" in attachment["text"]
    assert not [m for m in slack.messages if "Watchdog" in str(m)]
