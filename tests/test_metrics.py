from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics, status_class

EXPECTED_FAMILIES = {
    "meterline_requests": "counter",
    "meterline_request_duration_seconds": "histogram",
    "meterline_overhead_seconds": "histogram",
    "meterline_time_to_first_token_seconds": "histogram",
    "meterline_tokens": "counter",
    "meterline_cost_dollars": "counter",
    "meterline_cost_estimated": "counter",
    "meterline_unpriced_requests": "counter",
    "meterline_cache_requests": "counter",
    "meterline_cache_saved_dollars": "counter",
    "meterline_cache_entries": "gauge",
    "meterline_cache_false_hit_reports": "counter",
    "meterline_cache_failures": "counter",
    "meterline_cache_judge_decisions": "counter",
    "meterline_cache_judge_cost_dollars": "counter",
    "meterline_cache_judge_duration_seconds": "histogram",
    "meterline_experiment_requests": "counter",
    "meterline_experiment_cost_dollars": "counter",
    "meterline_experiment_quality_score": "histogram",
    "meterline_experiment_duration_seconds": "histogram",
    "meterline_route_decisions": "counter",
    "meterline_routing_saved_dollars": "counter",
    "meterline_budget_remaining_dollars": "gauge",
    "meterline_budget_limit_dollars": "gauge",
    "meterline_budget_rejections": "counter",
    "meterline_upstream_requests": "counter",
    "meterline_upstream_errors": "counter",
    "meterline_upstream_retries": "counter",
    "meterline_fallbacks": "counter",
    "meterline_spend_backlog_records": "gauge",
    "meterline_config_info": "gauge",
    "meterline_build_info": "gauge",
    "meterline_inflight_requests": "gauge",
    "meterline_mcp_tool_calls": "counter",
    "meterline_mcp_tool_duration_seconds": "histogram",
}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(build_version="1.2.3")
    m.set_known(
        ["sales", "research"], ["gpt-4o", "gpt-4o-mini"],
        providers=["openai"], experiments={"cheap": ["control", "mini"]},
        routing_rules=["short-prompts"],
    )
    return m


def test_renders_every_family_with_its_type(metrics: Metrics) -> None:
    metrics.record_request("/v1/chat/completions", "gpt-4o", "sales", 200, 1.0, 0.9)
    metrics.record_quality("cheap", "mini", 0.8)
    metrics.record_experiment("cheap", "mini", 0.01, duration_seconds=1.5)
    metrics.set_budget("sales", "month", 40.0, 100.0)
    metrics.record_upstream("openai", "timeout")
    metrics.record_budget_rejection("sales", "budget_exhausted")
    metrics.record_route_decision("short-prompts", "gpt-4o-mini", "sales", 0.01)
    metrics.set_cache_entries("department", 3)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert families == EXPECTED_FAMILIES


def test_unknown_model_and_department_become_other(metrics: Metrics) -> None:
    metrics.record_request("/v1/chat/completions", "made-up-model", "hackers", 200, 0.5)
    metrics.record_cost("sales", "made-up-model", 0.25)
    assert metrics.label_model("gpt-4o") == "gpt-4o"
    assert metrics.label_model("made-up-model") == "other"
    assert value(metrics, "meterline_requests_total", route="/v1/chat/completions",
                 model="other", department="other", status_class="2xx") == 1
    assert value(metrics, "meterline_cost_dollars_total", department="sales", model="other") == 0.25
    names = {labels for (name, labels) in samples(metrics)}
    assert not any(v in {"made-up-model", "hackers"} for labels in names for _, v in labels)


def test_unknown_route_and_closed_sets_are_bounded(metrics: Metrics) -> None:
    metrics.record_request("/v1/secret/abc123", "gpt-4o", "sales", 404, 0.01)
    metrics.record_cache("sales", "gpt-4o", "fuzzy", "maybe")
    metrics.record_experiment("not-configured", "x")
    assert value(metrics, "meterline_requests_total", route="other", model="gpt-4o",
                 department="sales", status_class="4xx") == 1
    assert value(metrics, "meterline_cache_requests_total", department="sales", model="gpt-4o",
                 kind="other", result="other") == 1
    assert value(metrics, "meterline_experiment_requests_total",
                 experiment="other", variant="other") == 1


def test_known_label_sets_are_precreated_at_zero(metrics: Metrics) -> None:
    for dept in ("sales", "research"):
        for model in ("gpt-4o", "gpt-4o-mini"):
            assert value(metrics, "meterline_cost_dollars_total", department=dept, model=model) == 0
            assert value(metrics, "meterline_tokens_total", department=dept, model=model,
                         direction="cached_input") == 0
    assert value(metrics, "meterline_experiment_requests_total",
                 experiment="cheap", variant="mini") == 0
    assert value(metrics, "meterline_upstream_retries_total", provider="openai") == 0


def test_usage_cost_and_unpriced(metrics: Metrics) -> None:
    metrics.record_usage("sales", "gpt-4o", input_tokens=100, output_tokens=20,
                         cached_input_tokens=50)
    metrics.record_cost("sales", "gpt-4o", 0.5, estimated=True)
    metrics.record_cost("sales", "gpt-4o", 0.0, priced=False)
    assert value(metrics, "meterline_tokens_total", department="sales", model="gpt-4o",
                 direction="input") == 100
    assert value(metrics, "meterline_tokens_total", department="sales", model="gpt-4o",
                 direction="output") == 20
    assert value(metrics, "meterline_cost_dollars_total", department="sales", model="gpt-4o") == 0.5
    assert value(metrics, "meterline_cost_estimated_total", department="sales",
                 model="gpt-4o") == 1
    assert value(metrics, "meterline_unpriced_requests_total", model="gpt-4o") == 1


def test_cache_judge_outcomes_cost_and_wait(metrics: Metrics) -> None:
    metrics.record_cache_judge("sales", "same", 0.0002, 0.3)
    metrics.record_cache_judge("sales", "vetoed", 0.0, None)  # no call: no cost, no wait
    metrics.record_cache_judge("hackers", "made-up", 0.0, 0.1)
    assert value(metrics, "meterline_cache_judge_decisions_total", department="sales",
                 outcome="same") == 1
    assert value(metrics, "meterline_cache_judge_decisions_total", department="research",
                 outcome="different") == 0  # pre-created
    assert value(metrics, "meterline_cache_judge_decisions_total", department="other",
                 outcome="other") == 1
    assert value(metrics, "meterline_cache_judge_cost_dollars_total",
                 department="sales") == pytest.approx(0.0002)
    assert value(metrics, "meterline_cache_judge_duration_seconds_count") == 2


def test_unpriced_spend_is_counted_at_the_default_price(metrics: Metrics) -> None:
    metrics.record_cost("sales", "gpt-4o", 0.25, priced=False)
    assert value(metrics, "meterline_cost_dollars_total", department="sales",
                 model="gpt-4o") == 0.25
    assert value(metrics, "meterline_unpriced_requests_total", model="gpt-4o") == 1


def test_overhead_is_proxy_time_minus_upstream(metrics: Metrics) -> None:
    metrics.record_request("/v1/chat/completions", "gpt-4o", "sales", 200, 2.0, 1.997)
    assert value(metrics, "meterline_overhead_seconds_bucket", le="0.0025") == 0
    assert value(metrics, "meterline_overhead_seconds_bucket", le="0.005") == 1
    assert value(metrics, "meterline_overhead_seconds_sum") == pytest.approx(0.003)


def test_config_version_replaces_previous(metrics: Metrics) -> None:
    metrics.set_config_version("abc")
    metrics.set_config_version("def")
    assert value(metrics, "meterline_config_info", version="def") == 1
    assert value(metrics, "meterline_config_info", version="abc") is None
    assert value(metrics, "meterline_build_info", version="1.2.3") == 1


def test_inflight_counts_inside_block(metrics: Metrics) -> None:
    with metrics.inflight():
        assert value(metrics, "meterline_inflight_requests") == 1
    assert value(metrics, "meterline_inflight_requests") == 0


def test_two_apps_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.record_cost("a", "m", 1.0)
    assert value(second, "meterline_cost_dollars_total", department="other", model="other") is None


@pytest.mark.parametrize(("status", "expected"), [(200, "2xx"), (429, "4xx"), (502, "5xx"),
                                                  (99, "other"), (600, "other")])
def test_status_class(status: int, expected: str) -> None:
    assert status_class(status) == expected


WORKER = textwrap.dedent("""
    import sys
    from proxy.metrics import Metrics
    m = Metrics()
    m.set_known(["sales"], ["gpt-4o"])
    m.record_cost("sales", "gpt-4o", float(sys.argv[1]))
    m.set_budget("sales", "month", float(sys.argv[2]), 100.0)
    m.set_spend_backlog(int(sys.argv[3]))
    assert m.multiprocess
""")

READER = textwrap.dedent("""
    from proxy.metrics import Metrics
    import sys
    sys.stdout.write(Metrics().render()[0].decode())
""")


def test_multiprocess_mode_aggregates_workers(tmp_path: Path) -> None:
    """prometheus_client picks multiprocess mode at import, so each worker is a subprocess."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parent.parent
    for args in (["0.25", "70", "2"], ["0.5", "60", "3"]):
        subprocess.run([sys.executable, "-c", WORKER, *args], env=env, cwd=root, check=True)
    assert list(tmp_path.glob("*.db"))
    out = subprocess.run([sys.executable, "-c", READER], env=env, cwd=root, check=True,
                         capture_output=True, text=True).stdout
    found = {(s.name, frozenset(s.labels.items())): s.value
             for f in text_string_to_metric_families(out) for s in f.samples}
    cost = found[("meterline_cost_dollars_total",
                  frozenset({("department", "sales"), ("model", "gpt-4o")}))]
    assert cost == pytest.approx(0.75)
    budget = [v for (name, labels), v in found.items()
              if name == "meterline_budget_remaining_dollars"]
    assert budget == [60.0]  # mostrecent: one series, not one per worker
    # livesum: workers have exited without mark_process_dead, so their backlog still counts
    backlog = [v for (name, _), v in found.items() if name == "meterline_spend_backlog_records"]
    assert backlog == [5.0]


def test_config_version_can_return_to_an_earlier_value() -> None:
    """Memoised children must not outlive a removed series (reload A -> B -> A)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from proxy.metrics import Metrics

    registry = CollectorRegistry()
    m = Metrics(registry)
    for version in ("aaa", "bbb", "aaa"):
        m.set_config_version(version)
    text = generate_latest(registry).decode()
    assert 'meterline_config_info{version="aaa"} 1.0' in text
    assert 'version="bbb"' not in text


def test_recorded_series_follow_a_change_of_known_labels(metrics: Metrics) -> None:
    def record() -> None:
        metrics.record_request("/v1/chat/completions", "gpt-5", "ops", 200, 0.1)
        metrics.record_usage("ops", "gpt-5", input_tokens=7, output_tokens=3)
        metrics.record_cost("ops", "gpt-5", 0.5)

    record()
    metrics.set_known(["ops"], ["gpt-5"])  # a reload: the same raw names now have own labels
    record()
    for dept, model in (("other", "other"), ("ops", "gpt-5")):
        assert value(metrics, "meterline_requests_total", route="/v1/chat/completions",
                     model=model, department=dept, status_class="2xx") == 1
        assert value(metrics, "meterline_tokens_total", department=dept, model=model,
                     direction="input") == 7
        assert value(metrics, "meterline_cost_dollars_total", department=dept, model=model) == 0.5
