"""Generated Prometheus rules: naming, labels, annotations, test coverage, time scaling."""

from __future__ import annotations

import re

import yaml

from dashboards.render import ROOT
from dashboards.rules import all_alerts, all_recordings, groups
from dashboards.rules.render import TESTS_DIR, render_template, runbook_url


def test_alerts_follow_the_conventions() -> None:
    alerts = all_alerts()
    assert len({a.name for a in alerts}) == len(alerts)
    for a in alerts:
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", a.name), a.name
        assert a.severity in ("critical", "warning")
        assert a.summary and "{{ $labels." in a.description, a.name
        assert runbook_url(a) == f"docs/runbooks/{a.name}.md"
        assert a.scenarios, a.name


def test_slo_alerts_use_the_workbook_windows() -> None:
    burns = {a.name: a.expr for a in all_alerts() if "slo" in a.labels}
    assert len(burns) == 6
    assert "rate1h > (14.4 * 0.005)" in burns["LlmAvailabilityBudgetBurnFast"]
    assert "rate5m > (14.4 * 0.005)" in burns["LlmAvailabilityBudgetBurnFast"]
    assert "rate6h > (6 * 0.01)" in burns["LlmLatencyBudgetBurnMedium"]
    assert "rate3d > (1 * 0.005)" in burns["LlmAvailabilityBudgetBurnSlow"]


def test_anomaly_alerts_have_seasonal_and_zero_guards() -> None:
    for a in all_alerts():
        if a.name.endswith("Anomalous"):
            assert "offset 1w" in a.expr and "stddev_over_time1h" in a.expr
            assert "unless" in a.expr and "> 0)" in a.expr


def test_every_alert_has_a_promtool_case() -> None:
    covered: dict[str, set[str]] = {}
    for path in (ROOT / TESTS_DIR).glob("*_test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test["alert_rule_test"]:
                covered.setdefault(case["alertname"], set()).add("firing" if case["exp_alerts"] else "quiet")
    for a in all_alerts():
        assert covered.get(a.name) == {"firing", "quiet"}, a.name


def test_scaling_divides_windows_and_for() -> None:
    normal = {a.name: a for a in all_alerts()}
    scaled = {a.name: a for a in all_alerts(scale=60)}
    assert scaled["LlmAvailabilityBudgetBurnSlow"].for_ == "1m"
    assert normal["LlmAvailabilityBudgetBurnSlow"].for_ == "1h"
    assert "[5s]" in " ".join(r.expr for r in all_recordings(scale=60))
    assert "offset 2h48m" in scaled["LlmRequestRateAnomalous"].expr
    assert [g.name for g in groups(scale=60)] == [g.name for g in groups()]


def test_render_template_expands_labels_only() -> None:
    assert render_template("Job {{ $labels.job }}", {"job": "a"}) == "Job a"
    try:
        render_template("{{ $value }}", {})
    except ValueError:
        return
    raise AssertionError("unsupported template accepted")
