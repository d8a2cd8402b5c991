"""Every panel query and rule expression parses on a real Prometheus; rules load; alerts reach a webhook."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

import dashboards
from dashboards.rules import all_alerts, all_recordings
from dashboards.rules.cost import PERIOD_LEFT, period_seconds_left, period_seconds_left_vector
from dashboards.stack import Server
from dashboards.webhook import WebhookReceiver
from middleware.cost.periods import PERIODS, period_end
from middleware.telemetry.names import L_PERIOD
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
    # The seconds left in each budget period need no input: they evaluate at once, one series per period.
    left = wait_until(lambda: prom.query(PERIOD_LEFT), 20, what="budget period records")
    assert sorted(r["metric"][L_PERIOD] for r in left) == sorted(PERIODS)


# Instants around the ends of UTC days and months, a leap February, a December and the epoch.
INSTANTS = ["1970-01-01T00:00:00", "2024-02-28T23:59:30", "2024-02-29T12:00:00", "2023-02-28T00:00:01",
            "2026-11-30T23:59:59", "2026-12-31T06:30:00", "2027-01-01T00:00:00", "2026-07-15T13:14:15"]


@pytest.mark.parametrize("period", PERIODS)
def test_period_left_agrees_with_the_ledger_periods(empty_prometheus: PromClient, period: str) -> None:
    """The budget burn alerts' seconds left in a period, computed by Prometheus, are the ledger's."""
    expr = period_seconds_left()[period]
    for text in INSTANTS:
        at = datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
        [sample] = empty_prometheus.query(expr, at)
        assert float(sample["value"][1]) == pytest.approx(period_end(period, at) - at), (period, text)
    [panel] = [v for v in empty_prometheus.query(period_seconds_left_vector()) if v["metric"][L_PERIOD] == period]
    assert float(panel["value"][1]) > 0


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
