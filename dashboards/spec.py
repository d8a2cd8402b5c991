"""Plain data describing dashboards; :mod:`dashboards.build` turns it into Grafana JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from middleware.telemetry.names import MetricDef

PanelKind = Literal["timeseries", "stat", "gauge", "heatmap", "bargauge", "table"]


@dataclass(frozen=True)
class Query:
    """One PromQL target and its legend."""

    expr: str
    legend: str = "__auto"
    heatmap: bool = False  # format=heatmap, for bucket queries
    instant: bool = False  # one value per series at the end of the range (bar gauges, tables)


@dataclass(frozen=True)
class Panel:
    """One panel; `description` must say what to do when it looks wrong."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: PanelKind = "timeseries"
    exemplars: bool = False
    width: int = 8
    height: int = 8
    min: float | None = None
    max: float | None = None
    # (value, color) steps after the base color: colors stat and gauge panels, dashed lines on time series.
    thresholds: tuple[tuple[float, str], ...] = ()
    base_color: str = "green"


@dataclass(frozen=True)
class Row:
    """A titled group of panels."""

    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable beyond datasource, job, instance and model: the values of `label` on
    `metric` (within the job and instance chosen). Queries filter with `label=~"$<name>"`."""

    name: str
    metric: MetricDef
    label: str


@dataclass(frozen=True)
class Dashboard:
    """One dashboard: uid is also its file name."""

    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("llm-middleware",))
    variables: tuple[Variable, ...] = ()

    def panels(self) -> list[Panel]:
        """Every panel, in order."""
        return [p for r in self.rows for p in r.panels]
