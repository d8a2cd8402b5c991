"""Routes limiter operations to Redis while it works and to a local fallback while it does not.

Fallback policy: when a Redis call fails (connection refused, timeout, any Redis error) the call
is answered by a local in-memory limiter holding ``1 / N`` of every limit (N: the live processes last
counted in Redis; or the configured ``fallback_fraction``), and
``limiter_fallback("redis", active=True)`` is reported once. Redis is tried again by at most one
caller every ``redis_retry_interval_seconds``; on success the limiter switches back and reports
``active=False``. No request is lost or failed because Redis died. Settling or releasing goes to the
backend that made the reservation; if that is Redis and Redis is down, the adjustment is dropped
(the Redis state is lost or stale anyway), so settling across backends is harmless.

Hand-over hooks keep the switch from bursting: ``on_failover`` runs when Redis is first found down
(the limiter empties the local buckets and charges them with its own reservations still queued on
Redis, whose admission times are in the future), and ``on_recover(primary)`` runs on the probe
that finds Redis back, before its operation (the limiter writes its local learned limits, window
and levels, scaled up by the inverse of its share, so a Redis restarted empty does not start full).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from middleware.limits.events import LimiterEvents
from middleware.limits.types import BackendDecision, Charge, LearnedLimits, LimiterKey, LimitState

_log = logging.getLogger(__name__)
T = TypeVar("T")

try:  # redis is an optional dependency: without it only the memory backend exists
    from redis import RedisError

    BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
except ImportError:  # pragma: no cover
    BACKEND_ERRORS = (OSError,)


class Backend(Protocol):
    """What the memory and Redis backends both provide."""

    name: str

    def reserve(self, key: LimiterKey, tokens: int, max_wait: float) -> BackendDecision: ...
    def adjust(
        self, key: LimiterKey, requests: int, tokens: int, charge: Charge, raw_tokens: int | None = None,
    ) -> None: ...
    def learn(self, key: LimiterKey, seen: LearnedLimits, charge: Charge | None = None) -> dict[str, LimitState]: ...
    def cooldown(self, key: LimiterKey, seconds: float, resources: tuple[str, ...], empty: bool = True) -> None: ...
    def cooldown_left(self, key: LimiterKey) -> float: ...
    def recheck(self, key: LimiterKey, charge: Charge | None, tokens: int) -> tuple[float, float]: ...
    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]: ...
    def close(self) -> None: ...


class Router:
    """Chooses the backend for each operation; without ``primary`` everything goes to ``local``."""

    def __init__(
        self, local: Backend, events: LimiterEvents, *, primary: Backend | None = None,
        retry_interval: float = 2.0, clock: Callable[[], float] = time.monotonic,
        on_failover: Callable[[], None] | None = None,
        on_recover: Callable[[Backend], None] | None = None,
    ) -> None:
        self.local = local
        self.primary = primary
        self._events = events
        self._retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._down = False
        self._next_try = 0.0
        self._on_failover = on_failover
        self._on_recover = on_recover

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and the fallback answers."""
        return self._down

    def _use_primary(self) -> bool:
        if self.primary is None:
            return False
        with self._lock:
            if not self._down:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self._retry_interval  # this caller probes; the others stay local
            return True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._next_try = self._clock() + self._retry_interval
            if self._down:
                return
            self._down = True
        _log.warning("limiter: Redis unavailable (%r); using the local fallback", exc)
        if self._on_failover is not None:
            try:
                self._on_failover()
            except Exception:  # never let a hand-over hook fail a call
                _log.exception("limiter: failover hook failed")
        self._events.limiter_fallback("redis", True)

    def _recovered(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
        _log.warning("limiter: Redis is back; leaving the local fallback")
        self._events.limiter_fallback("redis", False)

    def run(self, op: Callable[[Backend], T]) -> tuple[T, Backend]:
        """Run ``op`` on Redis if usable, else on the local backend; returns the result and who answered."""
        if self.primary is not None and self._use_primary():
            try:
                if self._down and self._on_recover is not None:
                    self._on_recover(self.primary)  # probing: restore Redis from the local state first
                result = op(self.primary)
            except BACKEND_ERRORS as exc:
                self._failed(exc)
            else:
                self._recovered()
                return result, self.primary
        return op(self.local), self.local

    def run_everywhere(self, op: Callable[[Backend], T]) -> T:
        """Run ``op`` where ``run`` would, and also locally so that the fallback knows limits and cooldowns."""
        result, used = self.run(op)
        if used is not self.local:
            op(self.local)
        return result

    def run_on(self, name: str, op: Callable[[Backend], None]) -> None:
        """Run ``op`` on the backend called ``name``; dropped if that is Redis and Redis is down."""
        if name == self.local.name:
            op(self.local)
        elif self.primary is not None and name == self.primary.name and not self._down:
            try:
                op(self.primary)
            except BACKEND_ERRORS as exc:
                self._failed(exc)

    def close(self) -> None:
        """Close both backends."""
        self.local.close()
        if self.primary is not None:
            self.primary.close()
