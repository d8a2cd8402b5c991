"""Dashboards: structure, conventions, filters, generated files up to date."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import dashboards
from dashboards import build, metricsdoc
from dashboards.promql import format_duration, parse_duration, scale_duration, selector, substitute
from dashboards.registry import DASHBOARDS
from dashboards.rules import all_alerts, all_recordings
from dashboards.spec import Dashboard
from middleware.telemetry.names import (
    BUDGET_LIMIT_USD,
    BUDGET_SPEND_USD,
    COST_USD,
    FILES_READ,
    L_FEATURE,
    L_MODEL,
    L_TEAM,
    OPERATION_DURATION,
    REQUESTS,
    STREAM_DURATION,
    TAG_LABELS,
    TIME_TO_FIRST_CHUNK,
    TOKEN_USAGE,
    all_metrics,
    bucket,
    count,
    total,
)

RENDERED = {d.uid: build.dashboard(d) for d in DASHBOARDS}
EXPECTED = {"llm-overview", "llm-rate-limits", "llm-reliability", "llm-streaming", "llm-token-estimation",
            "llm-operations", "llm-cost"}


def _panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in data["panels"] if p["type"] != "row"]


def test_the_seven_dashboards_exist() -> None:
    assert set(RENDERED) == EXPECTED


@pytest.mark.parametrize("uid", sorted(EXPECTED))
def test_panel_conventions(uid: str) -> None:
    data = RENDERED[uid]
    ids = [p["id"] for p in data["panels"]]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    rows = [p for p in data["panels"] if p["type"] == "row"]
    assert rows and all(not r.get("panels") for r in rows), "panels must be siblings after rows, not nested"
    for p in _panels(data):
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
        assert len(p.get("description", "")) > 40, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(refs), p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        if p["type"] == "timeseries":
            assert p["options"]["legend"]["showLegend"] is True, p["title"]
        for t in p["targets"]:
            assert t.get("legendFormat"), p["title"]


@pytest.mark.parametrize("uid", sorted(EXPECTED))
def test_template_variables(uid: str) -> None:
    names = [v["name"] for v in RENDERED[uid]["templating"]["list"]]
    own = list(TAG_LABELS) if uid == "llm-cost" else []  # the cost dashboard filters by its tag labels too
    assert names == ["datasource", "job", "instance", "model", *own]


def test_cost_queries_filter_by_the_tag_variables() -> None:
    cost = [expr for uid, _, expr in dashboards.all_panel_queries()
            if uid == "llm-cost" and COST_USD.prom_name in expr]
    assert len(cost) == 7
    for expr in cost:
        for tag, lbl in zip(TAG_LABELS, (L_TEAM, L_FEATURE), strict=True):
            assert f'{lbl}=~"${tag}"' in expr, expr
    variables = {v["name"]: v for v in RENDERED["llm-cost"]["templating"]["list"]}
    assert f"{COST_USD.prom_name}{{" in str(variables["team"]["query"]) and L_TEAM in str(variables["team"]["query"])


def test_no_price_table_in_the_dashboards_or_rules() -> None:
    """Cost comes from the middleware's cost counter, never from token counts times a table of our own."""
    exprs = [e for _, _, e in dashboards.all_panel_queries()]
    exprs += [r.expr for r in all_recordings()] + [a.expr for a in all_alerts()]
    assert not [e for e in exprs if re.search(r"(?<![a-z])price", e)]  # "unpriced" calls are fine
    assert not [e for e in exprs if TOKEN_USAGE.name in e and "group_left" in e]
    assert sum(COST_USD.prom_name in e for e in exprs) >= 10


def test_bar_gauges_and_tables_use_instant_queries() -> None:
    kinds = set()
    for data in RENDERED.values():
        for p in _panels(data):
            if p["type"] in ("bargauge", "table"):
                kinds.add(p["type"])
                assert all(t.get("instant") is True and not t.get("range") for t in p["targets"]), p["title"]
            else:
                assert all(t.get("range") is True for t in p["targets"]), p["title"]
    assert kinds == {"bargauge", "table"}


def test_every_query_is_filtered_by_the_template_variables() -> None:
    for uid, title, expr in dashboards.all_panel_queries():
        assert '=~"$job"' in expr and '=~"$instance"' in expr, (uid, title)
    # The model filter appears exactly where the metric has the label.
    assert '=~"$model"' in selector(REQUESTS)
    assert '=~"$model"' not in selector(FILES_READ)


def test_duration_panels_have_exemplars() -> None:
    duration_metrics = (OPERATION_DURATION.name, TIME_TO_FIRST_CHUNK.name, STREAM_DURATION.name)
    seen = set()
    for data in RENDERED.values():
        for p in _panels(data):
            for t in p["targets"]:
                for name in duration_metrics:
                    if name + "_bucket" in t["expr"]:
                        assert t["exemplar"] is True, p["title"]
                        seen.add(name)
    assert seen == set(duration_metrics)


def test_no_metric_name_is_unknown() -> None:
    known = {m.prom_name for m in all_metrics()}
    known |= {f(m) for m in all_metrics() for f in (bucket, count, total)}
    for _, title, expr in dashboards.all_panel_queries():
        for name in re.findall(r"\b((?:llm_middleware|gen_ai)_[a-z_]+)\{", expr):
            assert name in known, (title, name)


def test_selector_refuses_a_label_the_metric_lacks() -> None:
    with pytest.raises(ValueError):
        selector(FILES_READ, eq={L_MODEL: "x"})


def test_substitute_replaces_every_variable() -> None:
    expr = 'rate(x{job=~"$job", instance=~"$instance", model=~"$model"}[$__rate_interval]) * $__range'
    assert substitute(expr) == 'rate(x{job=~".*", instance=~".*", model=~".*"}[1m]) * 1h'
    assert substitute("$model", {"$model": "gpt-4o"}) == "gpt-4o"
    with pytest.raises(ValueError):
        substitute("rate(x[$unknown])")


def test_durations() -> None:
    assert parse_duration("1h30m") == 5_400_000
    assert format_duration(90_000) == "1m30s"
    assert scale_duration("1h", 60) == "1m"
    assert scale_duration("5m", 60) == "5s"
    assert scale_duration("3d", 60) == "1h12m"
    assert scale_duration("1w", 60) == "2h48m"


def test_generated_files_are_current() -> None:
    stale = dashboards.stale()
    assert not stale, f"stale generated files (run `python -m dashboards`): {stale}"


def test_check_mode_detects_staleness(tmp_path: Any) -> None:
    assert dashboards.main(["render", "--root", str(tmp_path)]) == 0
    assert dashboards.main(["check", "--root", str(tmp_path)]) == 0
    target = tmp_path / "deploy/grafana/dashboards/llm-overview.json"
    target.write_text(target.read_text().replace("Requests per second", "Requests"))
    assert dashboards.main(["check", "--root", str(tmp_path)]) == 1


def test_render_all_writes_one_json_per_dashboard(tmp_path: Any) -> None:
    paths = dashboards.render_all(tmp_path)
    assert sorted(p.stem for p in paths) == sorted(EXPECTED)
    assert json.loads(paths[0].read_text())["panels"]


def test_every_alert_has_a_runbook_file() -> None:
    root = dashboards.render.ROOT
    for a in all_alerts():
        text = (root / "docs/runbooks" / f"{a.name}.md").read_text()
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert section in text, (a.name, section)


def test_metrics_doc_lists_every_metric() -> None:
    text = metricsdoc.render()
    for m in all_metrics():
        assert f"`{m.prom_name}`" in text and f"`{m.instrument_name}`" in text


def test_metrics_doc_says_where_each_cost_metric_is_used() -> None:
    usage = metricsdoc.usage()
    cost = [m for m in all_metrics() if m.area == "cost"]
    assert cost and all("llm-cost" in usage[m.prom_name][0] for m in cost)
    assert "LlmSpendAnomalous" in usage[COST_USD.prom_name][1]  # through its recording rule
    burns = {"LlmCostBudgetBurnFast", "LlmCostBudgetBurnSlow"}
    assert all(burns <= set(usage[m.prom_name][1]) for m in (BUDGET_SPEND_USD, BUDGET_LIMIT_USD))
    assert usage[FILES_READ.prom_name] == (["llm-operations"], [])
    assert "## Where each metric is used" in metricsdoc.render()


def test_dashboard_panels_helper() -> None:
    d: Dashboard = DASHBOARDS[0]
    assert d.panels() and all(p.queries for p in d.panels())
