"""Spend alert end to end: the openai SDK drives spend through a real proxy, real Prometheus
scrapes it with the repository's rules, real Alertmanager (repository config) notifies a Slack
stand-in. One incident is exactly one grouped message naming the department and the amount.

The production threshold ($10/hour, rules/prometheus/thresholds.yml) is used unchanged; the
spend comes from an expensive model (o1, $60 per 1M output tokens) answered at length by a
private mock upstream.
Prometheus and Alertmanager run with 1 s intervals (tests/support/promstack.py); the measured
latency from threshold crossing to Slack is printed (pytest -s) and discussed, with production
intervals, in docs/alerts-latency.md.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from proxy.demo.upstream import MockState, create_mock_app
from tests.support.promstack import PromStack
from tests.support.servers import REPO_ROOT, ServerThread
from tests.support.slack_standin import Message, SlackStandin

ALERT = "MeterlineHourlySpendHigh"
MODEL = "o1"
# ~$3.48 a request: the third crosses $10, and two (plus the quiet department's ~$0.12) stay
# below it even with increase()'s extrapolation over a young series (see MIN_SAMPLES).
STEP_TOKENS = 58_000
ANSWER_WORDS = STEP_TOKENS  # the mock cuts answers to max_tokens (4 characters a token)
QUIET_TOKENS = 2_000
# increase() extrapolates the last sample up to one scrape interval towards the evaluation time:
# at most 1/(MIN_SAMPLES - 1) over the true increase, so spend starts after 6 scrapes (<= +20 %).
MIN_SAMPLES = 6
QUIET_WINDOW_S = 5.0  # >= 5 test group intervals and Prometheus resends after the message
BINARIES = (("prometheus",), ("promtool",), ("prometheus-alertmanager", "alertmanager"))


def require_binaries() -> None:
    missing = [names[0] for names in BINARIES if not any(map(shutil.which, names))]
    if not missing:
        return
    message = (f"{', '.join(missing)} not installed (apt-get install prometheus "
               "prometheus-alertmanager, or run bash scripts/test.sh)")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def hourly_threshold() -> float:
    """The shipped default, read from the rules Prometheus loads."""
    groups = yaml.safe_load((REPO_ROOT / "rules/prometheus/thresholds.yml").read_text())
    for rule in groups["groups"][0]["rules"]:
        if rule.get("record") == "meterline:hourly_spend_threshold_dollars":
            found = re.fullmatch(r"vector\(([\d.]+)\)", rule["expr"].strip())
            assert found, rule["expr"]
            return float(found.group(1))
    raise AssertionError("thresholds.yml has no meterline:hourly_spend_threshold_dollars")


def providers_with_o1(mock_url: str) -> dict[str, Any]:
    """The repository's providers.yaml pointed at the mock, plus o1 (an OpenAI list price)."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "rules/providers.yaml").read_text())
    for provider in config["providers"].values():
        provider.update(base_url=mock_url + "/v1", api_key_env="MOCK_UPSTREAM_KEY", timeout_s=30)
    config["models"][MODEL] = {"targets": [{"provider": "openai"}]}
    return config


@dataclass
class AlertPath:
    proxy: ServerThread
    stack: PromStack
    slack: SlackStandin

    def query(self, expr: str) -> dict[str, float]:
        """Instant query -> {department: value}."""
        return {r["metric"].get("department", ""): float(r["value"][1])
                for r in self.stack.prometheus.query(expr)}

    def spend(self, department: str, max_tokens: int) -> float:
        """One chat completion as ``department``; the cost the proxy charged for it."""
        client = openai.OpenAI(base_url=self.proxy.url + "/v1", max_retries=0,
                               api_key=f"sk-demo-{department}")
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=max_tokens,
            messages=[{"role": "user", "content": f"write a long essay ({time.time_ns()})"}])
        assert raw.parse().usage is not None
        return float(raw.headers["x-meterline-cost-usd"])


@pytest.fixture
def verbose_upstream() -> Iterator[ServerThread]:
    """A mock upstream of its own whose answers run to max_tokens."""
    server = ServerThread(create_mock_app(MockState(answer_words=ANSWER_WORDS))).start()
    yield server
    server.stop()


@pytest.fixture
def alert_path(start_proxy: Callable[..., ServerThread], verbose_upstream: ServerThread,
               tmp_path: Path) -> Iterator[AlertPath]:
    require_binaries()
    proxy = start_proxy(edits={"providers.yaml": providers_with_o1(verbose_upstream.url),
                               "cache.yaml": "enabled: false\n"})
    with (SlackStandin() as slack,
          PromStack.start(tmp_path, f"127.0.0.1:{proxy.port}", slack.url) as stack):
        yield AlertPath(proxy, stack, slack)


def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def cross_threshold(path: AlertPath, department: str, threshold: float) -> tuple[float, float]:
    """Spend as ``department`` until its total passes ``threshold``: (total, crossing time).

    The proxy counts the cost before it answers, so the crossing request's answer arriving is
    at most its transfer time after the counter passed the threshold."""
    total = 0.0
    while total <= threshold:
        assert path.slack.messages == [], "alert fired before the threshold was crossed"
        cost = path.spend(department, STEP_TOKENS)
        assert threshold / 4 < cost < threshold / 2, f"a step cost ${cost}"
        total += cost
    return total, time.time()


def amount(message: Message, department: str) -> float:
    text = message["attachments"][0]["text"]
    found = re.search(rf"Department {department} spent \$([\d.]+) in the last hour", text)
    assert found, text
    return float(found.group(1))


def report_latency(path: AlertPath, message: Message, crossed_at: float, spent: float,
                   threshold: float) -> None:
    """Print crossing -> Prometheus firing (activeAt) -> Slack, in seconds (pytest -s)."""
    received = next(t for t, m in path.slack.arrivals if m is message)
    received_at = time.time() - (time.monotonic() - received)
    fired = [a for a in path.stack.prometheus.alerts() if a["labels"]["alertname"] == ALERT
             and a["labels"].get("department") == "engineering"]
    assert fired, "Slack got the alert but Prometheus does not list it"
    active_at = datetime.fromisoformat(fired[0]["activeAt"]).timestamp()
    print(f"\nthreshold ${threshold:.2f} crossed at ${spent:.2f}; Slack message "
          f"{received_at - crossed_at:.2f} s later (Prometheus firing after "
          f"{active_at - crossed_at:.2f} s; scrape/eval 1 s, group_wait 1 s)")


def total_alert_state(path: AlertPath) -> list[dict[str, Any]]:
    return [alert["status"] for alert in path.stack.alertmanager.alerts()
            if alert["labels"]["alertname"] == ALERT and alert["labels"].get("scope") == "total"]


@pytest.mark.slow
def test_hourly_spend_alert_reaches_slack_once(alert_path: AlertPath) -> None:
    path, threshold = alert_path, hourly_threshold()
    series = "department:meterline_hourly_spend_threshold_dollars"
    assert eventually(lambda: path.query(series).get("engineering"), series) == threshold

    samples = f'count_over_time(up{{job="meterline"}}[1m]) >= {MIN_SAMPLES}'
    eventually(lambda: path.stack.prometheus.query(samples), f"{MIN_SAMPLES} scrapes")
    quiet = path.spend("executive", QUIET_TOKENS)
    assert 0 < quiet < threshold / 10
    increase = "department:meterline_cost_dollars:increase1h"
    eventually(lambda: path.query(increase).get("executive"), "executive spend in Prometheus")

    spent, crossed_at = cross_threshold(path, "engineering", threshold)
    message = path.slack.wait_for(lambda m: f"{ALERT} - department engineering" in str(m), 30)
    report_latency(path, message, crossed_at, spent, threshold)

    more = spent + path.spend("engineering", STEP_TOKENS)  # the incident grows ...
    eventually(lambda: path.query(increase).get("engineering", 0) > more - 0.01, "the new spend")
    time.sleep(QUIET_WINDOW_S)  # ... and still is one message
    assert path.slack.messages == [message]

    attachment = message["attachments"][0]
    assert attachment["title"] == f"[FIRING] {ALERT} - department engineering"
    overshoot = 1 + 1 / (MIN_SAMPLES - 1)  # printed with 2 decimals: +-0.005
    assert spent - 0.005 <= amount(message, "engineering") <= spent * overshoot + 0.005
    assert f"(threshold ${threshold:.2f})" in attachment["text"]
    assert "executive" not in str(message) and "Watchdog" not in str(message)
    assert 0 < path.query(increase)["executive"] < threshold

    # The total crossed $10 too; Alertmanager inhibits it while a department alert fires.
    states = eventually(lambda: total_alert_state(path), "the total-scope alert")
    assert states[0]["state"] == "suppressed" and states[0]["inhibitedBy"]
    watchdog = [a for a in path.stack.alertmanager.alerts()
                if a["labels"]["alertname"] == "MeterlineWatchdog"]
    assert watchdog and watchdog[0]["receivers"] == [{"name": "heartbeat"}]
