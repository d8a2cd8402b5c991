"""Prometheus recording and alerting rules generated from Python, with promtool tests and runbooks.

Everything is rendered from one :class:`dashboards.mixin.MixinConfig`. ``groups(scale=60)`` divides
every window, offset and ``for:`` by 60 so that an end-to-end test can watch hour-long alerts fire
within a minute or two.
"""

from __future__ import annotations

from dashboards.mixin import DEFAULT, MixinConfig
from dashboards.rules.components import component_groups
from dashboards.rules.config import RulesConfig
from dashboards.rules.cost import cost_alerts_group, cost_group
from dashboards.rules.model import Alert, Group, Recording, Windows
from dashboards.rules.recording import rates_group, slo_group
from dashboards.rules.slo import slo_alerts_group

__all__ = ["Alert", "Group", "Recording", "RulesConfig", "all_alerts", "all_recordings", "groups"]


def groups(cfg: MixinConfig | None = None, scale: float = 1.0) -> list[Group]:
    """Every rule group, recording groups first."""
    cfg = cfg or DEFAULT
    w = Windows(scale)
    return [slo_group(cfg, w), rates_group(cfg, w), cost_group(cfg, w), slo_alerts_group(cfg, w),
            *component_groups(cfg, w), cost_alerts_group(cfg, w)]


def all_alerts(cfg: MixinConfig | None = None, scale: float = 1.0) -> list[Alert]:
    """Every alerting rule."""
    return [a for g in groups(cfg, scale) for a in g.alerts]


def all_recordings(cfg: MixinConfig | None = None, scale: float = 1.0) -> list[Recording]:
    """Every recording rule."""
    return [r for g in groups(cfg, scale) for r in g.recordings]
