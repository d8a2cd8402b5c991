"""The telemetry the limiter reports, as a Protocol the telemetry Recorder implements."""

from __future__ import annotations

import logging
from typing import Protocol

_log = logging.getLogger(__name__)


class LimiterEvents(Protocol):
    """Domain events of the limiter (throttle decisions are recorded by the pipeline from reservations)."""

    def limiter_fallback(self, backend: str, active: bool) -> None:
        """The shared backend became unreachable (``active=True``) or usable again (``False``)."""

    def ratelimit_header_error(self, reason: str) -> None:
        """An ``x-ratelimit-*`` header was missing or unparsable; ``reason`` is a closed code."""

    def cooldown(self, model: str, resource: str, seconds: float) -> None:
        """A 429 put the key into a cooldown of ``seconds`` for ``resource``."""

    def limits_learned(self, model: str, resource: str, limit: float, remaining: float) -> None:
        """Headers gave ``limit``; ``remaining`` is the local level after correction."""

    def limiter_decision_time(self, backend: str, seconds: float) -> None:
        """One reservation decision took ``seconds`` on ``backend``."""


class NoopEvents:
    """Default events sink: records nothing."""

    def limiter_fallback(self, backend: str, active: bool) -> None:
        """Ignore."""

    def ratelimit_header_error(self, reason: str) -> None:
        """Ignore."""

    def cooldown(self, model: str, resource: str, seconds: float) -> None:
        """Ignore."""

    def limits_learned(self, model: str, resource: str, limit: float, remaining: float) -> None:
        """Ignore."""

    def limiter_decision_time(self, backend: str, seconds: float) -> None:
        """Ignore."""


class SafeEvents:
    """Wraps an events sink so that a failing recorder never raises into the caller (logged once)."""

    def __init__(self, inner: LimiterEvents) -> None:
        self._inner = inner
        self._logged = False

    def _failed(self, exc: Exception) -> None:
        if not self._logged:
            self._logged = True
            _log.warning("limiter telemetry failed (further failures not logged): %r", exc)

    def limiter_fallback(self, backend: str, active: bool) -> None:
        """Forward."""
        try:
            self._inner.limiter_fallback(backend, active)
        except Exception as exc:
            self._failed(exc)

    def ratelimit_header_error(self, reason: str) -> None:
        """Forward."""
        try:
            self._inner.ratelimit_header_error(reason)
        except Exception as exc:
            self._failed(exc)

    def cooldown(self, model: str, resource: str, seconds: float) -> None:
        """Forward."""
        try:
            self._inner.cooldown(model, resource, seconds)
        except Exception as exc:
            self._failed(exc)

    def limits_learned(self, model: str, resource: str, limit: float, remaining: float) -> None:
        """Forward."""
        try:
            self._inner.limits_learned(model, resource, limit, remaining)
        except Exception as exc:
            self._failed(exc)

    def limiter_decision_time(self, backend: str, seconds: float) -> None:
        """Forward."""
        try:
            self._inner.limiter_decision_time(backend, seconds)
        except Exception as exc:
            self._failed(exc)
