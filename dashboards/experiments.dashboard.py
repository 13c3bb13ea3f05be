"""Meterline / Experiments: variants side by side, and what routing rules save."""

from __future__ import annotations

from panels import (
    USD,
    build_dashboard,
    label_variable,
    layout,
    table,
    timeseries,
)

EXP = 'experiment="$experiment"'
RATE = "[$__rate_interval]"
RANGE = "[$__range]"


def per_variant(metric: str, window: str = RANGE) -> str:
    return f"sum by (variant) (increase({metric}{{{EXP}}}{window}))"


def variant_mean(metric: str, window: str = RANGE) -> str:
    return f"{per_variant(metric + '_sum', window)} / {per_variant(metric + '_count', window)}"


def variant_p95(metric: str) -> str:
    return (f"histogram_quantile(0.95, sum by (le, variant) "
            f"(rate({metric}_bucket{{{EXP}}}{RATE})))")


dashboard = build_dashboard(
    title="Meterline / Experiments",
    uid="meterline-experiments",
    description="Experiment variants compared on cost, latency and quality; routing savings.",
    variables=[label_variable("experiment",
                              "label_values(meterline_experiment_requests_total, experiment)",
                              include_all=False)],
    panels=layout([
        [
            (table("Variants side by side (time range)", [
                (per_variant("meterline_experiment_requests_total"), "requests"),
                (per_variant("meterline_experiment_cost_dollars_total"), "cost"),
                (f"{per_variant('meterline_experiment_cost_dollars_total')}"
                 f" / {per_variant('meterline_experiment_requests_total')}", "cost per request"),
                (variant_mean("meterline_experiment_duration_seconds"), "mean duration"),
                (variant_mean("meterline_experiment_quality_score"), "mean quality"),
            ], description="One row per variant of $experiment."), 24),
        ],
        [
            (timeseries("Cost per request by variant", [(
                f"{per_variant('meterline_experiment_cost_dollars_total', RATE)}"
                f" / {per_variant('meterline_experiment_requests_total', RATE)}",
                "{{variant}}")], USD), 8),
            (timeseries("Duration p95 by variant", [(
                variant_p95("meterline_experiment_duration_seconds"), "{{variant}}")], "s"), 8),
            (timeseries("Mean quality score by variant", [(
                variant_mean("meterline_experiment_quality_score", "[1h]"), "{{variant}}")],
                description="Mean of scores in [0, 1] over the last hour."), 8),
        ],
        [
            (timeseries("Requests by variant", [(
                f"sum by (variant) (rate(meterline_experiment_requests_total{{{EXP}}}{RATE}))",
                "{{variant}}")], "reqps", stacked=True), 8),
            (timeseries("Routing rule hits", [(
                f"sum by (rule, target_model) (rate(meterline_route_decisions_total{RATE}))",
                "{{rule}} -> {{target_model}}")], "reqps", stacked=True), 8),
            (timeseries("Saved by routing ($/hour)", [(
                f"sum by (department) (rate(meterline_routing_saved_dollars_total{RATE})) * 3600",
                "{{department}}")], USD, stacked=True), 8),
        ],
    ]),
)
