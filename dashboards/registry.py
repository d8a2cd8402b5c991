"""The dashboards we ship, rendered from a mixin config, and helpers to inspect their queries."""

from __future__ import annotations

from dashboards.boards import cost, operations, overview, ratelimits, reliability, streaming, tokens
from dashboards.mixin import DEFAULT, MixinConfig
from dashboards.spec import Dashboard

_BUILDERS = (overview, ratelimits, reliability, streaming, tokens, operations, cost)


def dashboards(cfg: MixinConfig = DEFAULT) -> tuple[Dashboard, ...]:
    """Every dashboard, for `cfg`."""
    return tuple(b.build(cfg) for b in _BUILDERS)


DASHBOARDS: tuple[Dashboard, ...] = dashboards()


def all_panel_queries(cfg: MixinConfig = DEFAULT) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every query of every panel."""
    return [(d.uid, p.title, q.expr) for d in dashboards(cfg) for p in d.panels() for q in p.queries]
