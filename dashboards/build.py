"""Turn :mod:`dashboards.spec` data into Grafana 11.6 dashboard JSON with grafana-foundation-sdk."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import bargauge, gauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from dashboards import spec
from dashboards.mixin import DEFAULT, MixinConfig
from dashboards.promql import INSTANCE, JOB, MODEL_VAR
from middleware.telemetry.names import L_MODEL, REQUESTS, MetricDef

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _variables(cfg: MixinConfig, extra: tuple[spec.Variable, ...] = ()
               ) -> list[db.DatasourceVariable | db.QueryVariable]:
    """datasource, job, instance, model, then the dashboard's own (`extra`): each multi-select with an `All`
    of `.*`, within the config's selector."""
    ds = db.DatasourceVariable("datasource").label("Data source").type("prometheus")
    scope = [str(m) for m in cfg.matchers]

    def series(*matchers: str, metric: MetricDef = REQUESTS) -> str:
        parts = [*scope, *matchers]
        return metric.prom_name + (f"{{{', '.join(parts)}}}" if parts else "")

    job, instance = f'{JOB}=~"$job"', f'{INSTANCE}=~"$instance"'
    chain = [
        (JOB, f"label_values({series()}, {JOB})"),
        (INSTANCE, f"label_values({series(job)}, {INSTANCE})"),
        (MODEL_VAR, f"label_values({series(job, instance)}, {L_MODEL})"),
        *((v.name, f"label_values({series(job, instance, metric=v.metric)}, {v.label})") for v in extra),
    ]
    out: list[db.DatasourceVariable | db.QueryVariable] = [ds]
    for name, query in chain:
        out.append(
            db.QueryVariable(name)
            .label(name)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        )
    return out


def _target(q: spec.Query, ref: str, exemplars: bool, table_format: bool = False) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .expr(q.expr)
        .legend_format(q.legend)
        .ref_id(ref)
        .datasource(DATASOURCE)
        .exemplar(exemplars)
    )
    target = target.instant() if q.instant else target.range()
    if q.heatmap:
        target = target.format(pm.PromQueryFormat.HEATMAP)
    elif table_format:
        target = target.format(pm.PromQueryFormat.TABLE)
    return target


def _legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.TABLE)
        .placement(cm.LegendPlacement.BOTTOM)
        .calcs(["mean", "max", "lastNotNull"])
    )


def _thresholds(steps: tuple[tuple[float, str], ...], base: str) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=None, color=base), *(dm.Threshold(value=v, color=c) for v, c in steps)])
    )


Builder = timeseries.Panel | stat.Panel | gauge.Panel | heatmap.Panel | bargauge.Panel | table.Panel


def panel(p: spec.Panel, panel_id: int) -> Builder:
    """One panel builder with id, unit, description, datasource and a ref id per query."""
    b: Builder
    if p.kind == "timeseries":
        b = timeseries.Panel().legend(_legend()).fill_opacity(10)
    elif p.kind == "stat":
        b = stat.Panel().graph_mode(cm.BigValueGraphMode.AREA)
    elif p.kind == "gauge":
        b = gauge.Panel().show_threshold_markers(True)
    elif p.kind == "bargauge":
        b = (bargauge.Panel().display_mode(cm.BarGaugeDisplayMode.GRADIENT)
             .orientation(cm.VizOrientation.HORIZONTAL)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    elif p.kind == "table":
        b = table.Panel().sort_by([cb.TableSortByFieldState().display_name("Value").desc(True)])
    else:
        b = heatmap.Panel().calculate(False).show_legend().y_axis(heatmap.YAxisConfig().unit(p.unit))
    b = b.id(panel_id).title(p.title).description(p.description).unit(p.unit).datasource(DATASOURCE)
    b = b.span(p.width).height(p.height)
    if p.min is not None:
        b = b.min(p.min)
    if p.max is not None:
        b = b.max(p.max)
    if p.thresholds:
        b = b.thresholds(_thresholds(p.thresholds, p.base_color))
        if isinstance(b, timeseries.Panel):
            b = b.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
    for i, q in enumerate(p.queries):
        b = b.with_target(_target(q, REF_IDS[i], p.exemplars, table_format=p.kind == "table"))
    return b


def dashboard(d: spec.Dashboard, cfg: MixinConfig = DEFAULT) -> dict[str, Any]:
    """The dashboard as a JSON-ready dict; rows are followed by their panels as siblings."""
    b = (
        db.Dashboard(d.title)
        .uid(d.uid)
        .description(d.description)
        .tags(list(d.tags))
        .editable()
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    for v in _variables(cfg, d.variables):
        b = b.with_variable(v)
    next_id = 1
    for row in d.rows:
        b = b.with_row(db.Row(row.title).id(next_id).collapsed(False))
        next_id += 1
        for p in row.panels:
            b = b.with_panel(panel(p, next_id))
            next_id += 1
    data: dict[str, Any] = json.loads(json.dumps(b.build(), cls=JSONEncoder))
    return data


def to_json(d: spec.Dashboard, cfg: MixinConfig = DEFAULT) -> str:
    """Stable, diff-friendly JSON text."""
    return json.dumps(dashboard(d, cfg), indent=2, sort_keys=True) + "\n"
