"""``CostConfig``: prices, attribution tags and budgets; ``from_env`` reads the ``MIDDLEWARE_*`` variables.

=================================  ==========================================================================
``MIDDLEWARE_PRICES_FILE``         user price file (JSON or YAML, same shape as the shipped table)
``MIDDLEWARE_TAG_KEYS``            allow-listed tag keys, comma-separated (default ``team,feature,end_user``)
``MIDDLEWARE_TAG_VALUE_CAP``       distinct values per tag key on metrics (default 50)
``MIDDLEWARE_TAG_COMBINATION_CAP`` distinct tag label combinations on metrics (default 250)
``MIDDLEWARE_BUDGETS``             rules ``SCOPE[=VALUE]/PERIOD=USD`` separated by ``,`` or ``;``
                                   (``api_key/day=50,team=*/month=300,team=search/day=20``)
``MIDDLEWARE_BUDGET_MODE``         ``enforce`` (default), ``wait`` or ``warn``
``MIDDLEWARE_BUDGET_MAX_WAIT``     seconds a call may wait for a period to roll over in ``wait`` mode (60)
``MIDDLEWARE_BUDGET_REDIS_URL``    shared budgets (default: ``MIDDLEWARE_REDIS_URL``; unset = this process)
``MIDDLEWARE_BUDGET_DEFAULT_MAX_OUTPUT`` output ceiling for the worst case when neither the request nor
                                   the price table has one (default 32768; ``none``: such calls are unbudgeted)
=================================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleware.errors import ConfigError

from .attribution import TagConfig
from .budgets import MODES, BudgetRule, Mode


@dataclass(frozen=True)
class CostConfig:
    """Everything the cost services need; every field has a safe default (no budgets)."""

    prices_file: Path | None = None
    """A user price file (JSON or YAML) extending or overriding the shipped table."""
    prices: Mapping[str, Any] | None = None
    """In-code price overrides, same shape as a price file (applied after ``prices_file``)."""
    tags: TagConfig = field(default_factory=TagConfig)
    budgets: tuple[BudgetRule, ...] = ()
    budget_mode: Mode = "enforce"
    budget_max_wait_seconds: float = 60.0
    redis_url: str | None = None
    """Shares budgets across processes and hosts; None: ``Config.redis.url`` (unset too: this process only).
    Timeouts, back-off and fallback are ``Config.redis``'s (``middleware.redisconn``)."""
    redis_prefix: str = "llm_middleware"
    fallback_fraction: float = 0.5
    """While Redis is down, each process may spend this fraction of a budget's last known remaining room."""
    default_max_output_tokens: int | None = 32768
    """Output ceiling of the worst case when neither the request nor the price table sets one."""

    def __post_init__(self) -> None:
        if self.budget_mode not in MODES:
            raise ConfigError(f"budget_mode must be one of {', '.join(MODES)}, not {self.budget_mode!r}")
        if not self.budget_max_wait_seconds >= 0:
            raise ConfigError("budget_max_wait_seconds must be >= 0")
        if not 0 < self.fallback_fraction <= 1:
            raise ConfigError("fallback_fraction must be in (0, 1]")
        if self.default_max_output_tokens is not None and self.default_max_output_tokens < 0:
            raise ConfigError("default_max_output_tokens must be >= 0 or None")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CostConfig:
        """The cost part of ``Config.from_env()``: one table of ``MIDDLEWARE_*`` variables (``middleware.config``),
        with ``redis_url`` resolved (``MIDDLEWARE_BUDGET_REDIS_URL``, else ``MIDDLEWARE_REDIS_URL``)."""
        from dataclasses import replace

        from ..config import Config

        config = Config.from_env(env)
        redis = config.redis_for("budget")
        return replace(config.cost, redis_url=redis.url if redis is not None else None)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
