"""Meterline / Cache: hit rates, savings, size, false-hit reports and the LLM judge."""

from __future__ import annotations

from panels import (
    DEPT,
    USD,
    build_dashboard,
    department_variable,
    layout,
    pie,
    stat,
    timeseries,
)

RATE = "[$__rate_interval]"


def hit_ratio(by: str = "") -> str:
    """Hits over hits + misses; bypassed and shadow lookups are not cache decisions."""
    agg = f"sum by ({by})" if by else "sum"
    hits = f'{agg} (rate(meterline_cache_requests_total{{{DEPT},result="hit"}}{RATE}))'
    lookups = f'{agg} (rate(meterline_cache_requests_total{{{DEPT},result=~"hit|miss"}}{RATE}))'
    return f"{hits} / {lookups}"


dashboard = build_dashboard(
    title="Meterline / Cache",
    uid="meterline-cache",
    description="Exact and semantic cache: hit rate, dollars saved, size, wrong answers.",
    variables=[department_variable()],
    panels=layout([
        [
            (stat("Hit rate", hit_ratio(), "percentunit"), 6),
            (stat("Saved (time range)", f"sum(increase(meterline_cache_saved_dollars_total"
                                        f"{{{DEPT}}}[$__range]))", USD), 6),
            (stat("Entries", "sum(max by (scope_kind) (meterline_cache_entries))"), 6),
            (stat("False-hit reports (time range)",
                  f"sum(increase(meterline_cache_false_hit_reports_total{{{DEPT}}}[$__range]))"),
             6),
        ],
        [
            (timeseries("Hit rate by department", [(hit_ratio("department"), "{{department}}")],
                        "percentunit"), 12),
            (timeseries("Hit rate by model", [(hit_ratio("model"), "{{model}}")],
                        "percentunit"), 12),
        ],
        [
            (timeseries("Lookups by kind and result", [(
                f"sum by (kind, result) (rate(meterline_cache_requests_total{{{DEPT}}}{RATE}))",
                "{{kind}} {{result}}")], "reqps", stacked=True,
                description="shadow = semantic would-be hit logged but not served."), 12),
            (timeseries("Saved by department ($/hour)", [(
                f"sum by (department) (rate(meterline_cache_saved_dollars_total{{{DEPT}}}{RATE}))"
                " * 3600", "{{department}}")], USD, stacked=True), 12),
        ],
        [
            (timeseries("Entries by scope", [(
                "max by (scope_kind) (meterline_cache_entries)", "{{scope_kind}}")]), 8),
            (timeseries("False-hit reports by department", [(
                f"sum by (department) "
                f"(increase(meterline_cache_false_hit_reports_total{{{DEPT}}}[1h]))",
                "{{department}}")], description="User reports of a wrong cached answer, per hour."),
             8),
            (pie("Saved by department (time range)",
                 f"sum by (department) (increase(meterline_cache_saved_dollars_total{{{DEPT}}}"
                 "[$__range]))", "{{department}}"), 8),
        ],
        [
            (timeseries("LLM judge decisions by outcome", [(
                f"sum by (outcome) (rate(meterline_cache_judge_decisions_total{{{DEPT}}}{RATE}))",
                "{{outcome}}")], "reqps", stacked=True,
                description="Borderline candidates put to the optional LLM judge (off by "
                            "default): same = served, the rest missed; vetoed and refused made "
                            "no call."), 12),
            (timeseries("LLM judge spend ($/hour)", [(
                f"sum by (department) (rate(meterline_cache_judge_cost_dollars_total{{{DEPT}}}"
                f"{RATE})) * 3600", "{{department}}")], USD, stacked=True,
                description="Charged to the department like any call; judged hits' savings "
                            "are net of it."), 12),
        ],
    ]),
)
