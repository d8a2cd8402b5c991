"""Retry telemetry as domain events; the telemetry package's Recorder implements them."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class RetryEvents(Protocol):
    """What the retry package reports beyond the decisions themselves."""

    def retry_budget_exhausted(self, model: str) -> None:
        """A retry was refused because the retry budget was spent."""

    def breaker_transition(self, endpoint: str, model: str, state: str) -> None:
        """The circuit breaker of (endpoint, model) entered ``state``: "closed", "half_open" or "open"."""


class NoopRetryEvents:
    """The default: report nothing."""

    def retry_budget_exhausted(self, model: str) -> None:
        """Ignore the event."""

    def breaker_transition(self, endpoint: str, model: str, state: str) -> None:
        """Ignore the event."""


class SafeEvents:
    """Wraps a RetryEvents so that telemetry never raises into the call (logged once)."""

    def __init__(self, inner: RetryEvents) -> None:
        self._inner = inner
        self._logged = False

    def retry_budget_exhausted(self, model: str) -> None:
        """Forward, swallowing errors."""
        try:
            self._inner.retry_budget_exhausted(model)
        except Exception:
            self._log_once()

    def breaker_transition(self, endpoint: str, model: str, state: str) -> None:
        """Forward, swallowing errors."""
        try:
            self._inner.breaker_transition(endpoint, model, state)
        except Exception:
            self._log_once()

    def _log_once(self) -> None:
        if not self._logged:
            self._logged = True
            log.exception("retry telemetry event failed; further failures are not logged")
