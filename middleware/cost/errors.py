"""Errors of the cost package (part of the middleware's one hierarchy)."""

from __future__ import annotations

from middleware.errors import MiddlewareError


class BudgetExceeded(MiddlewareError):
    """A call would exceed a budget (``enforce`` mode, or ``wait`` mode past ``max_wait_seconds``).

    ``budget`` names the budget (``key:<hash>`` or ``team=search``), ``period`` is ``day`` or ``month``,
    ``period_id`` the UTC period (``2026-11-30`` or ``2026-11``); ``spent_usd`` is the settled spend so far,
    ``reserved_usd`` what calls in flight hold, ``requested_usd`` this call's worst case and ``limit_usd``
    the limit. ``retry_in_seconds`` is the time until the period rolls over.
    """

    def __init__(
        self, message: str, *, budget: str, period: str, period_id: str, spent_usd: float, reserved_usd: float,
        requested_usd: float, limit_usd: float, retry_in_seconds: float,
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.period = period
        self.period_id = period_id
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.requested_usd = requested_usd
        self.limit_usd = limit_usd
        self.retry_in_seconds = retry_in_seconds
