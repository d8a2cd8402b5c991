"""What the cost package reports, as a Protocol the telemetry Recorder implements.

Label values arrive bounded: ``labels`` are the folded values of ``names.TAG_LABELS`` and ``budget`` is
a folded budget name; ``model`` is the raw model name (the recorder folds it as for every metric).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .calc import Cost

_log = logging.getLogger(__name__)


class CostEvents(Protocol):
    """Domain events of pricing, attribution and budgets."""

    def call_cost(self, model: str, labels: tuple[str, ...], cost: Cost) -> None:
        """A call (or one request of a resumed stream) settled at ``cost`` (cost counter by token type,
        cached savings)."""

    def call_unpriced(self, model: str, labels: tuple[str, ...], reason: str) -> None:
        """A call settled without a price; ``reason`` is ``unknown_model``, ``no_output_price`` or ``no_usage``."""

    def budget_decision(self, budget: str, period: str, decision: str) -> None:
        """One budget's decision for one call: ``admitted``, ``waited``, ``refused`` or ``warned``."""

    def budget_state(self, budget: str, period: str, spent_usd: float, limit_usd: float) -> None:
        """A budget's settled spend in its current period, as the ledger last saw it (gauges)."""

    def budget_fallback(self, backend: str, active: bool) -> None:
        """The shared budget backend became unreachable (``active=True``) or usable again (``False``)."""

    def tag_folded(self, key: str) -> None:
        """A tag value of ``key`` was folded into ``other`` (cap reached)."""


class NoopCostEvents:
    """Default sink: records nothing."""

    def call_cost(self, model: str, labels: tuple[str, ...], cost: Cost) -> None:
        """Ignore."""

    def call_unpriced(self, model: str, labels: tuple[str, ...], reason: str) -> None:
        """Ignore."""

    def budget_decision(self, budget: str, period: str, decision: str) -> None:
        """Ignore."""

    def budget_state(self, budget: str, period: str, spent_usd: float, limit_usd: float) -> None:
        """Ignore."""

    def budget_fallback(self, backend: str, active: bool) -> None:
        """Ignore."""

    def tag_folded(self, key: str) -> None:
        """Ignore."""


class SafeCostEvents:
    """Wraps a sink so that a failing recorder never raises into the call (logged once)."""

    def __init__(self, inner: CostEvents) -> None:
        self._inner = inner
        self._logged = False

    def _failed(self, exc: Exception) -> None:
        if not self._logged:
            self._logged = True
            _log.warning("cost telemetry failed (further failures not logged): %r", exc)

    def call_cost(self, model: str, labels: tuple[str, ...], cost: Cost) -> None:
        """Forward."""
        try:
            self._inner.call_cost(model, labels, cost)
        except Exception as exc:
            self._failed(exc)

    def call_unpriced(self, model: str, labels: tuple[str, ...], reason: str) -> None:
        """Forward."""
        try:
            self._inner.call_unpriced(model, labels, reason)
        except Exception as exc:
            self._failed(exc)

    def budget_decision(self, budget: str, period: str, decision: str) -> None:
        """Forward."""
        try:
            self._inner.budget_decision(budget, period, decision)
        except Exception as exc:
            self._failed(exc)

    def budget_state(self, budget: str, period: str, spent_usd: float, limit_usd: float) -> None:
        """Forward."""
        try:
            self._inner.budget_state(budget, period, spent_usd, limit_usd)
        except Exception as exc:
            self._failed(exc)

    def budget_fallback(self, backend: str, active: bool) -> None:
        """Forward."""
        try:
            self._inner.budget_fallback(backend, active)
        except Exception as exc:
            self._failed(exc)

    def tag_folded(self, key: str) -> None:
        """Forward."""
        try:
            self._inner.tag_folded(key)
        except Exception as exc:
            self._failed(exc)
