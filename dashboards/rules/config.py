"""Objectives and thresholds of the generated rules: now fields of the one mixin config.

``RulesConfig`` is kept as a name for :class:`dashboards.mixin.MixinConfig`.
"""

from __future__ import annotations

from dashboards.mixin import MixinConfig

RulesConfig = MixinConfig

__all__ = ["RulesConfig"]
