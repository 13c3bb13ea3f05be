"""Meterline / Departments: who spends what, budgets, and a chargeback table."""

from __future__ import annotations

from panels import (
    DEPT,
    USD,
    build_dashboard,
    department_variable,
    layout,
    pie,
    table,
    timeseries,
)

RANGE = "[$__range]"


def by_department(metric: str) -> str:
    return f"sum by (department) (increase({metric}{{{DEPT}}}{RANGE}))"


dashboard = build_dashboard(
    title="Meterline / Departments",
    uid="meterline-departments",
    description="Spend and budgets per department; the tables export as CSV for chargeback.",
    variables=[department_variable()],
    panels=layout([
        [
            (pie("Cost by department (time range)",
                 by_department("meterline_cost_dollars_total"), "{{department}}"), 8),
            (table("Budget used", [
                (f"department_period:meterline_budget_used:ratio{{{DEPT}}}", ""),
            ], "percentunit", description="Share of the current day/month budget spent."), 8),
            (timeseries("Budget remaining", [(
                f"min by (department, period) (meterline_budget_remaining_dollars{{{DEPT}}})",
                "{{department}} {{period}}")], USD), 8),
        ],
        [
            (table("Chargeback: cost by department and model (time range)", [
                (f"sum by (department, model) "
                 f"(increase(meterline_cost_dollars_total{{{DEPT}}}{RANGE}))", "cost"),
                (f"sum by (department, model) "
                 f"(increase(meterline_requests_total{{{DEPT}}}{RANGE}))", "requests"),
                (f"sum by (department, model) "
                 f"(increase(meterline_cost_estimated_total{{{DEPT}}}{RANGE}))", "estimated"),
            ], description="Columns: dollars, requests, requests whose cost was estimated."), 24),
        ],
        [
            (table("Tokens by department, model and direction (time range)", [
                (f"sum by (department, model, direction) "
                 f"(increase(meterline_tokens_total{{{DEPT}}}{RANGE}))", "tokens"),
            ]), 12),
            (table("Savings by department (time range)", [
                (by_department("meterline_cache_saved_dollars_total"), "cache"),
                (by_department("meterline_routing_saved_dollars_total"), "routing"),
            ], USD), 12),
        ],
        [
            (timeseries("Spend per day by department", [(
                f"sum by (department) (increase(meterline_cost_dollars_total{{{DEPT}}}[1d]))",
                "{{department}}")], USD), 12),
            (timeseries("Unpriced requests by model", [(
                "sum by (model) (rate(meterline_unpriced_requests_total[$__rate_interval]))",
                "{{model}}")], "reqps",
                description="Requests for models with no price: their spend is missing."), 12),
        ],
    ]),
)
