"""A user's own copy, rendered from a non-default mixin config, checked with the real tools.

promtool checks and tests the copy's rules. Its rule tests carry decoy series outside the selector
(and in another group): the test that proves the selector is applied is that removing it from one
alert makes promtool fail. Every query of the copy parses on a real Prometheus.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import dashboards
from dashboards.mixin import MixinConfig, parse_selector
from dashboards.rules import all_alerts, all_recordings
from middleware.telemetry.names import BREAKER_STATE
from tests.fixtures.prom_stack import PromClient

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")

CONFIG = MixinConfig(selector='job="my-api", namespace=~"prod|staging", cluster!="dev"',
                     group_by=("cluster", "namespace", "job"), retry_ratio_max=0.3, remaining_capacity_min=0.2,
                     ttfc_p95_max_s=2.0, estimate_error_p90_max=0.25, availability_objective=0.99,
                     runbook_url="https://runbooks.example/llm/{alert}", namespace="observability",
                     rule_labels={"release": "kube-prometheus-stack"}, grafana_folder="LLM")


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=180)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixin-copy")
    assert dashboards.render_copy(out, CONFIG)
    return out


def test_copy_rules_pass_promtool(copy: Path) -> None:
    rules = sorted(str(p) for p in (copy / "prometheus/rules").glob("*.yml"))
    result = _run(str(PROMTOOL), "check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = sorted((copy / "prometheus/tests").glob("*_test.yml"))
    assert len(tests) == 6 and any(t.name == "cost-alerts_test.yml" for t in tests)
    for test in tests:
        result = _run(str(PROMTOOL), "test", "rules", test.name, cwd=test.parent)
        assert result.returncode == 0, test.name + result.stdout + result.stderr
        assert "decoy" in test.read_text()


def test_an_alert_without_the_selector_fails_its_promtool_test(copy: Path, tmp_path: Path) -> None:
    shutil.copytree(copy / "prometheus", tmp_path / "prometheus")
    rules = tmp_path / "prometheus/rules/retry-alerts.yml"
    scoped = f"{BREAKER_STATE.prom_name}{{{', '.join(str(m) for m in parse_selector(CONFIG.selector))}}}"
    data = yaml.safe_load(rules.read_text())
    [rule] = [r for r in data["groups"][0]["rules"] if r.get("alert") == "LlmCircuitBreakerOpen"]
    assert scoped in rule["expr"]
    rule["expr"] = rule["expr"].replace(scoped, BREAKER_STATE.prom_name)
    rules.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _run(str(PROMTOOL), "test", "rules", "retry-alerts_test.yml", cwd=tmp_path / "prometheus/tests")
    assert result.returncode != 0
    assert "LlmCircuitBreakerOpen" in result.stdout + result.stderr and "decoy" in result.stdout + result.stderr


def test_copy_queries_parse_on_prometheus(empty_prometheus: PromClient) -> None:
    queries = dashboards.all_panel_queries(CONFIG)
    assert len(queries) > 60
    for _, _, expr in queries:
        empty_prometheus.query(dashboards.substitute(expr))
    for scale in (1, 60):
        for r in all_recordings(CONFIG, scale):
            empty_prometheus.query(r.expr)
        for a in all_alerts(CONFIG, scale):
            empty_prometheus.query(a.expr)
