"""Meterline / Overview: spend rate, traffic, errors, latency, proxy overhead and MCP
tool use."""

from __future__ import annotations

from panels import (
    DEPT,
    USD,
    build_dashboard,
    department_variable,
    layout,
    stat,
    timeseries,
)

RATE = "[$__rate_interval]"


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{RATE})))",
         f"p{p}{suffix}")
        for q, p in (("0.5", "50"), ("0.95", "95"))
    ]


spend_rate = f"sum(rate(meterline_cost_dollars_total{{{DEPT}}}{RATE})) * 3600"
error_ratio = (
    f'sum(rate(meterline_requests_total{{{DEPT},status_class="5xx"}}{RATE}))'
    f" / sum(rate(meterline_requests_total{{{DEPT}}}{RATE}))"
)

dashboard = build_dashboard(
    title="Meterline / Overview",
    uid="meterline-overview",
    description="Spend, traffic, errors and latency of the Meterline proxy.",
    variables=[department_variable()],
    panels=layout([
        [
            (stat("Spend, last 24h",
                  f"sum(increase(meterline_cost_dollars_total{{{DEPT}}}[24h]))", USD), 6),
            (stat("Spend rate ($/hour)", spend_rate, USD), 6),
            (stat("Requests/s",
                  f"sum(rate(meterline_requests_total{{{DEPT}}}{RATE}))", "reqps"), 6),
            (stat("5xx ratio", error_ratio, "percentunit"), 6),
        ],
        [
            (timeseries("Spend rate by department ($/hour)", [(
                f"sum by (department) (rate(meterline_cost_dollars_total{{{DEPT}}}{RATE})) * 3600",
                "{{department}}")], USD, stacked=True), 12),
            (timeseries("Spend rate by model ($/hour)", [(
                f"sum by (model) (rate(meterline_cost_dollars_total{{{DEPT}}}{RATE})) * 3600",
                "{{model}}")], USD, stacked=True), 12),
        ],
        [
            (timeseries("Requests by status class", [(
                f"sum by (status_class) (rate(meterline_requests_total{{{DEPT}}}{RATE}))",
                "{{status_class}}")], "reqps", stacked=True), 12),
            (timeseries("Upstream errors by provider and kind", [(
                f"sum by (provider, kind) (rate(meterline_upstream_errors_total{RATE}))",
                "{{provider}} {{kind}}"), (
                f"sum by (provider) (rate(meterline_upstream_retries_total{RATE}))",
                "{{provider}} retries"), (
                f"sum by (provider) (rate(meterline_fallbacks_total{RATE}))",
                "{{provider}} fallbacks")], "reqps"), 12),
        ],
        [
            (timeseries("Request duration p50 / p95 by model",
                        quantiles("meterline_request_duration_seconds", "model"), "s"), 8),
            (timeseries("Time to first token p50 / p95 by model",
                        quantiles("meterline_time_to_first_token_seconds", "model"), "s"), 8),
            (timeseries("Proxy overhead p50 / p95",
                        quantiles("meterline_overhead_seconds"), "s",
                        description="Request time minus upstream time."), 8),
        ],
        [
            (timeseries("In-flight requests and spend backlog", [
                ("sum(meterline_inflight_requests)", "in flight"),
                ("sum(meterline_spend_backlog_records)", "spend records waiting")]), 12),
            (timeseries("Budget rejections", [(
                f"sum by (department, reason) "
                f"(rate(meterline_budget_rejections_total{{{DEPT}}}{RATE}))",
                "{{department}} {{reason}}")], "reqps"), 6),
            (timeseries("Loaded versions", [
                ("max by (version) (meterline_config_info) == 1", "config {{version}}"),
                ("max by (version) (meterline_build_info)", "build {{version}}")]), 6),
        ],
        [
            (timeseries("MCP tool calls per day by tool", [(
                "sum by (tool) (increase(meterline_mcp_tool_calls_total[1d]))", "{{tool}}")],
                description="Calls in the 24 hours before each point (meterline mcp ...)."), 8),
            (timeseries("MCP tool failures by outcome", [(
                f'sum by (tool, outcome) (rate(meterline_mcp_tool_calls_total{{outcome!="ok"}}'
                f"{RATE}))", "{{tool}} {{outcome}}")], "reqps"), 8),
            (timeseries("MCP tool duration p50 / p95 by tool",
                        quantiles("meterline_mcp_tool_duration_seconds", "tool"), "s"), 8),
        ],
    ]),
)
