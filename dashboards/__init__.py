"""Observability as code: Grafana dashboards, Prometheus rules, promtool tests, runbooks, Kubernetes objects.

Everything is generated from Python (names come from :mod:`middleware.telemetry.names`) and one
:class:`~dashboards.mixin.MixinConfig`, and rendered into ``deploy/`` and ``docs/`` by
``python -m dashboards`` (or into a copy of your own with ``--out``).
"""

from dashboards.mixin import MixinConfig, load_config
from dashboards.promql import substitute
from dashboards.registry import DASHBOARDS, all_panel_queries, dashboards
from dashboards.render import artifacts, main, render_all, render_copy, render_rules, stale

__all__ = [
    "DASHBOARDS",
    "MixinConfig",
    "all_panel_queries",
    "artifacts",
    "dashboards",
    "load_config",
    "main",
    "render_all",
    "render_copy",
    "render_rules",
    "stale",
    "substitute",
]
