"""Observability as code: Grafana dashboards, Prometheus rules, promtool tests, runbooks and the metrics reference.

Everything is generated from Python (names come from :mod:`middleware.telemetry.names`) and
rendered into ``deploy/`` and ``docs/`` by ``python -m dashboards``.
"""

from dashboards.promql import substitute
from dashboards.registry import DASHBOARDS, all_panel_queries
from dashboards.render import artifacts, main, render_all, render_rules, stale

__all__ = [
    "DASHBOARDS",
    "all_panel_queries",
    "artifacts",
    "main",
    "render_all",
    "render_rules",
    "stale",
    "substitute",
]
