"""The dashboards we ship, and helpers to inspect their queries."""

from __future__ import annotations

from dashboards.boards import operations, overview, ratelimits, reliability, streaming, tokens
from dashboards.spec import Dashboard

DASHBOARDS: tuple[Dashboard, ...] = (
    overview.DASHBOARD,
    ratelimits.DASHBOARD,
    reliability.DASHBOARD,
    streaming.DASHBOARD,
    tokens.DASHBOARD,
    operations.DASHBOARD,
)


def all_panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every query of every panel."""
    return [(d.uid, p.title, q.expr) for d in DASHBOARDS for p in d.panels() for q in p.queries]
