"""The mixin config: one object scopes, groups and thresholds every panel and rule; the render command."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

import dashboards
from dashboards import build
from dashboards.mixin import DEFAULT, MixinConfig, load_config, parse_selector
from dashboards.registry import all_panel_queries
from dashboards.registry import dashboards as render_dashboards
from dashboards.rules import all_alerts, all_recordings
from dashboards.rules.render import runbook_url
from middleware.telemetry.names import L_PERIOD, all_metrics, bucket, count, total

SELECTOR = 'job="my-api", namespace=~"prod|staging"'
CUSTOM = MixinConfig(selector=SELECTOR, group_by=("cluster", "namespace", "job"), retry_ratio_max=0.3,
                     remaining_capacity_min=0.2, throttle_wait_p95_max_s=2.5, ttfc_p95_max_s=2.0,
                     estimate_error_p90_max=0.25, unpriced_share_max=0.1, budget_projected_share_max=0.9,
                     runbook_url="https://runbooks.example/llm/{alert}")
FAMILIES = sorted({f(m) for m in all_metrics() for f in (lambda m: m.prom_name, bucket, count, total)},
                  key=len, reverse=True)
_FAMILY = re.compile(r"(?<![\w:])(" + "|".join(map(re.escape, FAMILIES)) + r")(?![\w:])(\{[^}]*\})?")


def _series_selectors(expr: str) -> list[tuple[str, str]]:
    """(metric family, its `{...}` or "") for every metric of ours an expression reads."""
    return [(m.group(1), m.group(2) or "") for m in _FAMILY.finditer(expr)]


def _rule_exprs(cfg: MixinConfig) -> list[tuple[str, str]]:
    return ([(r.record, r.expr) for r in all_recordings(cfg)] + [(a.name, a.expr) for a in all_alerts(cfg)])


def _variable_queries(cfg: MixinConfig) -> list[str]:
    return [v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            for d in render_dashboards(cfg) for v in build.dashboard(d, cfg)["templating"]["list"] if "query" in v
            and v["type"] == "query"]


def test_parse_selector() -> None:
    assert [str(m) for m in parse_selector(SELECTOR)] == ['job="my-api"', 'namespace=~"prod|staging"']
    assert [str(m) for m in parse_selector('{cluster!="dev",team!~"ml.*"}')] == ['cluster!="dev"', 'team!~"ml.*"']
    assert parse_selector("") == () and parse_selector("{}") == ()
    [m] = parse_selector('namespace=~"prod|staging"')
    assert m.matches("prod") and not m.matches("production")  # anchored, as in Prometheus
    for bad in ('job=my-api', 'job="a" namespace="b"', '1job="a"', 'job=~"("', 'job=="a"'):
        with pytest.raises(ValueError):
            parse_selector(bad)


def test_selector_scopes_every_series_of_every_panel_rule_and_variable() -> None:
    matchers = [str(m) for m in parse_selector(SELECTOR)]
    seen = 0
    sources = [*((f"{uid}/{title}", expr) for uid, title, expr in all_panel_queries(CUSTOM)),
               *_rule_exprs(CUSTOM), *(("variable", q) for q in _variable_queries(CUSTOM))]
    for where, expr in sources:
        for family, sel in _series_selectors(expr):
            seen += 1
            assert all(m in sel for m in matchers), (where, family, sel)
    assert seen >= 140
    # The default config adds nothing: its series selectors carry only the template filters (or none).
    for _, expr in _rule_exprs(DEFAULT):
        assert all("my-api" not in sel for _, sel in _series_selectors(expr))


def test_group_by_reaches_every_rule_aggregation() -> None:
    clauses = [(name, c) for name, expr in _rule_exprs(CUSTOM) for c in re.findall(r"\bby \(([^)]*)\)", expr)]
    assert len(clauses) > 40
    for name, clause in clauses:
        labels = {x.strip() for x in clause.split(",")}
        assert {"cluster", "namespace", "job"} <= labels, (name, clause)
    joins = [c for _, expr in _rule_exprs(CUSTOM) for c in re.findall(r"\b(?:on|unless on) \(([^)]*)\)", expr)]
    period_join = L_PERIOD  # the seconds left in a budget period are the same for every group
    assert joins and all({"cluster", "namespace", "job"} <= {x.strip() for x in c.split(",")}
                         for c in joins if c != period_join)
    assert period_join in joins


def _panel(cfg: MixinConfig, title: str) -> dict[str, object]:
    for d in render_dashboards(cfg):
        for p in build.dashboard(d, cfg)["panels"]:
            if p.get("title") == title:
                return p  # type: ignore[no-any-return]
    raise AssertionError(title)


def _threshold_values(panel: dict[str, object]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]  # type: ignore[index]
    return [s["value"] for s in steps if s["value"] is not None]


@pytest.mark.parametrize(("panel", "field", "alert"), [
    ("Retry ratio", "retry_ratio_max", "LlmRetryRatioHigh"),
    ("Remaining capacity ratio", "remaining_capacity_min", "LlmRateLimitCapacityLow"),
    ("Throttle wait p95", "throttle_wait_p95_max_s", "LlmThrottleWaitHigh"),
    ("Time to first chunk p50 / p95", "ttfc_p95_max_s", "LlmTimeToFirstChunkHigh"),
    ("Estimate error ratio p50 / p90", "estimate_error_p90_max", "LlmTokenEstimateDrift"),
    ("Unpriced share of calls", "unpriced_share_max", "LlmUnpricedTrafficHigh"),
])
def test_a_panel_threshold_is_the_rule_threshold(panel: str, field: str, alert: str) -> None:
    for cfg in (DEFAULT, CUSTOM):
        value = getattr(cfg, field)
        assert _threshold_values(_panel(cfg, panel)) == [value], (panel, cfg is DEFAULT)
        [rule] = [a for a in all_alerts(cfg) if a.name == alert]
        assert re.search(rf"[<>] {re.escape(f'{value:g}')}\b", rule.expr), (alert, rule.expr)
    assert getattr(CUSTOM, field) != getattr(DEFAULT, field)


def test_budget_burn_share_is_drawn_where_the_runbook_points() -> None:
    for cfg in (DEFAULT, CUSTOM):
        share = cfg.budget_projected_share_max
        assert _threshold_values(_panel(cfg, "Projected spend at period end / limit")) == [share]
        assert _threshold_values(_panel(cfg, "Budget used")) == [share]
        burns = [a for a in all_alerts(cfg) if a.name.startswith("LlmCostBudgetBurn")]
        assert len(burns) == 2 and all(a.expr.count(f"> ({share:g} * ") == 2 for a in burns)
        assert all(a.runbook.dashboard == "llm-cost" for a in burns)
    assert CUSTOM.budget_projected_share_max != DEFAULT.budget_projected_share_max


def test_remaining_capacity_gauge_is_red_below_the_threshold() -> None:
    steps = _panel(DEFAULT, "Remaining capacity ratio")["fieldConfig"]["defaults"]["thresholds"]["steps"]  # type: ignore[index]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": DEFAULT.remaining_capacity_min}]


def test_runbook_url_pattern() -> None:
    a = all_alerts(CUSTOM)[0]
    assert runbook_url(a, CUSTOM) == f"https://runbooks.example/llm/{a.name}"
    assert runbook_url(a) == f"docs/runbooks/{a.name}.md"


def test_config_validation_and_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MixinConfig(latency_threshold_s=3.0)  # not a bucket boundary
    with pytest.raises(ValueError):
        MixinConfig(selector="job=api")
    with pytest.raises(ValueError):
        MixinConfig(group_by=("job", "bad label"))
    path = tmp_path / "mixin.yaml"
    path.write_text(yaml.safe_dump({"selector": 'job="x"', "group_by": ["namespace", "job"], "retry_ratio_max": 0.4}))
    cfg = load_config(path, group_by="cluster,job")
    assert (cfg.selector, cfg.group_by, cfg.retry_ratio_max) == ('job="x"', ("cluster", "job"), 0.4)
    path.write_text("retry_ratio: 0.4\n")
    with pytest.raises(ValueError, match="unknown"):
        load_config(path)


def test_render_command_writes_a_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboards.main(["render", "--selector", 'job="my-api"', "--out", str(tmp_path)]) == 0
    rules = (tmp_path / "prometheus/rules/retry-alerts.yml").read_text()
    assert 'job="my-api"' in rules
    assert sorted(p.name for p in (tmp_path / "kubernetes").iterdir()) == [
        "grafana-dashboards.yaml", "kustomization.yaml", "prometheusrule.yaml"]
    assert len(list((tmp_path / "grafana/dashboards").glob("*.json"))) == 7
    assert (tmp_path / "grafana/dashboards/llm-cost.json").exists()
    assert 'job="my-api"' in (tmp_path / "prometheus/rules/cost-recording.yml").read_text()
    assert list((tmp_path / "prometheus/tests").glob("*_test.yml"))
    assert (tmp_path / "runbooks/LlmRetryRatioHigh.md").exists()
    overview = json.loads((tmp_path / "grafana/dashboards/llm-overview.json").read_text())
    assert all('job="my-api"' in t["expr"] for p in overview["panels"] for t in p.get("targets", []))
    # A non-default config never overwrites deploy/: it needs --out.
    with pytest.raises(SystemExit):
        dashboards.main(["render", "--selector", 'job="my-api"'])
    with pytest.raises(SystemExit):
        dashboards.main(["render", "--selector", "job=my-api", "--out", str(tmp_path)])
    capsys.readouterr()


def test_default_copy_equals_the_repository_files(tmp_path: Path) -> None:
    """`render --out` with the default config gives the files deploy/ and docs/runbooks hold."""
    dashboards.render_copy(tmp_path, DEFAULT)
    root = dashboards.render.ROOT
    pairs = [("grafana/dashboards", "deploy/grafana/dashboards"), ("prometheus/rules", "deploy/prometheus/rules"),
             ("prometheus/tests", "deploy/prometheus/tests"), ("kubernetes", "deploy/kubernetes"),
             ("runbooks", "docs/runbooks")]
    for copy, repo in pairs:
        names = sorted(p.name for p in (tmp_path / copy).iterdir())
        assert names == sorted(p.name for p in (root / repo).iterdir()), repo
        for name in names:
            assert (tmp_path / copy / name).read_text() == (root / repo / name).read_text(), (repo, name)


def test_every_config_field_is_documented() -> None:
    text = (dashboards.render.ROOT / "docs/mixin.md").read_text()
    missing = [f.name for f in dataclasses.fields(MixinConfig) if f"| `{f.name}` |" not in text]
    assert not missing
    for f in dataclasses.fields(MixinConfig):
        if isinstance(f.default, float):
            assert f"| `{f.name}` | `{f.default:g}` |" in text or f"| `{f.name}` | `{f.default}` |" in text, f.name
