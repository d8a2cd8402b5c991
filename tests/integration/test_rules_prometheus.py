"""Every panel query and rule expression parses on a real Prometheus; rules load; alerts reach a webhook."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import dashboards
from dashboards.rules import all_alerts, all_recordings
from dashboards.stack import Server
from dashboards.webhook import WebhookReceiver
from tests.fixtures.prom_stack import PromClient, wait_until


def test_every_panel_query_parses(empty_prometheus: PromClient) -> None:
    queries = dashboards.all_panel_queries()
    assert len(queries) > 60
    for uid, title, expr in queries:
        empty_prometheus.query(dashboards.substitute(expr))  # raises PromAPIError on a bad query
        assert uid and title


@pytest.mark.parametrize("scale", [1, 60])
def test_every_rule_expression_parses(empty_prometheus: PromClient, scale: int) -> None:
    for r in all_recordings(scale=scale):
        empty_prometheus.query(r.expr)
    for a in all_alerts(scale=scale):
        empty_prometheus.query(a.expr)


def test_bad_query_is_reported(empty_prometheus: PromClient) -> None:
    from tests.fixtures.prom_stack import PromAPIError

    with pytest.raises(PromAPIError):
        empty_prometheus.query("sum by (model (rate(x[1m]))")


def test_scaled_rules_load_and_evaluate(prometheus_factory: Callable[..., PromClient], scaled_rules_dir: Path) -> None:
    prom = prometheus_factory([], scaled_rules_dir)
    expected = {a.name for a in all_alerts()} | {r.record for r in all_recordings()}

    def loaded() -> set[str] | None:
        groups = prom.api("rules")["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        healthy = all(r["health"] in ("ok", "unknown") for g in groups for r in g["rules"])
        return names if names >= expected and healthy else None

    wait_until(loaded, 20, what="rules loaded")
    # Price recording rules need no input: they evaluate at once.
    wait_until(lambda: prom.query("llm_middleware:token_price_usd"), 20, what="price table")


def test_alerts_flow_to_the_webhook(
    prometheus_factory: Callable[..., PromClient],
    alertmanager_factory: Callable[..., Server],
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    """The fixture chain the end-to-end test relies on: Prometheus -> Alertmanager -> webhook."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "always.yml").write_text(
        "groups:\n- name: t\n  rules:\n  - alert: AlwaysFiring\n    expr: vector(1)\n"
        "    labels: {severity: warning}\n"
    )
    am = alertmanager_factory(f"{webhook_receiver.url}/hook")
    prom = prometheus_factory([], rules, am.url)
    wait_until(lambda: "AlwaysFiring" in prom.firing(), 20, what="firing in Prometheus")
    wait_until(lambda: "AlwaysFiring" in webhook_receiver.firing(), 30, what="webhook notification")
