"""Small builders shared by the ``*.dashboard.py`` files (grafanalib).

Every panel queries the data source chosen in the ``$datasource`` template variable and uses
``$__rate_interval`` for rates, so the dashboards work at any scrape interval.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafanalib.core import (
    Dashboard,
    GridPos,
    Panel,
    PieChartv2,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

DATASOURCE = "${datasource}"
DEPT = 'department=~"$department"'
USD = "currencyUSD"
FULL_WIDTH = 24


def datasource_variable() -> Template:
    return Template(name="datasource", label="Data source", type="datasource",
                    query="prometheus", default="Prometheus")


def label_variable(name: str, query: str, *, include_all: bool = True) -> Template:
    """A query variable over a label; with "All" it matches every value via ``.*``."""
    return Template(
        name=name, label=name.capitalize(), query=query, dataSource=DATASOURCE,
        includeAll=include_all, multi=include_all, allValue=".*" if include_all else None,
        refresh=2, sort=1,
    )


def department_variable() -> Template:
    return label_variable("department", "label_values(meterline_cost_dollars_total, department)")


def target(expr: str, legend: str = "", ref_id: str = "A", *, table: bool = False) -> Target:
    if table:
        return Target(expr=expr, legendFormat=legend, refId=ref_id, datasource=DATASOURCE,
                      instant=True, format="table")
    return Target(expr=expr, legendFormat=legend, refId=ref_id, datasource=DATASOURCE)


def _targets(queries: Sequence[tuple[str, str]], *, table: bool = False) -> list[Target]:
    return [target(expr, legend, chr(ord("A") + i), table=table)
            for i, (expr, legend) in enumerate(queries)]


def timeseries(title: str, queries: Sequence[tuple[str, str]], unit: str = "short",
               *, stacked: bool = False, description: str = "") -> TimeSeries:
    return TimeSeries(
        title=title, description=description, dataSource=DATASOURCE, targets=_targets(queries),
        unit=unit, stacking={"mode": "normal"} if stacked else {"mode": "none"},
        legendDisplayMode="table", legendPlacement="bottom", legendCalcs=["mean", "max"],
    )


def stat(title: str, expr: str, unit: str = "short", *, description: str = "") -> Stat:
    return Stat(title=title, description=description, dataSource=DATASOURCE,
                targets=[target(expr)], format=unit, reduceCalc="lastNotNull", graphMode="area")


def table(title: str, queries: Sequence[tuple[str, str]], unit: str = "short",
          *, description: str = "") -> Table:
    """Instant queries, one column each, merged on their labels into one row per label set."""
    return Table(
        title=title, description=description, dataSource=DATASOURCE,
        targets=_targets(queries, table=True), unit=unit, filterable=True,
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
    )


def pie(title: str, expr: str, legend: str, unit: str = USD) -> PieChartv2:
    return PieChartv2(title=title, dataSource=DATASOURCE, targets=[target(expr, legend)],
                      unit=unit, pieType="donut", legendDisplayMode="table",
                      legendPlacement="right", legendValues=["value", "percent"],
                      reduceOptionsCalcs=["lastNotNull"])


def layout(rows: Sequence[Sequence[tuple[Panel, int]]], height: int = 8) -> list[Panel]:
    """Place panels row by row; each entry is (panel, width out of 24)."""
    placed: list[Panel] = []
    for y, row in enumerate(rows):
        x = 0
        for panel, width in row:
            placed.append(_at(panel, GridPos(h=height, w=width, x=x, y=y * height)))
            x += width
        if x > FULL_WIDTH:
            raise ValueError(f"row {y} is {x} wide, more than {FULL_WIDTH}")
    return placed


def _at(panel: Panel, pos: GridPos) -> Panel:
    panel.gridPos = pos
    return panel


def build_dashboard(title: str, uid: str, panels: list[Panel], variables: list[Template],
              description: str) -> Dashboard:
    return Dashboard(
        title=title, uid=uid, description=description, tags=["meterline"],
        timezone="utc", time=Time("now-24h", "now"), refresh="1m",
        templating=Templating(list=[datasource_variable(), *variables]),
        panels=panels,
    ).auto_panel_ids()
