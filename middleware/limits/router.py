"""Routes limiter operations to Redis while it works and to a local fallback while it does not.

Fallback policy: when a Redis call fails (connection refused, timeout, any Redis error) the call
is answered by a local in-memory limiter holding ``1 / N`` of every limit (N: the live processes last
counted in Redis; or the configured ``fallback_fraction``), and
``limiter_fallback("redis", active=True)`` is reported once. When Redis is tried again is the shared Redis
policy's (``middleware.redisconn``: a back-off after each failure, then one caller probes; other features
failing on the same Redis count too); until then every operation is answered locally at once, and counted.
On success the limiter switches back and reports ``active=False``. No request is lost or failed because
Redis died (unless ``RedisConfig.fallback="fail"``: a reservation then raises ``RedisUnavailable``).
Settling or releasing goes to the backend that made the reservation; if that is Redis and Redis is down, the
adjustment is dropped (the Redis state is lost or stale anyway), so settling across backends is harmless.

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
from typing import Any, Literal, Protocol, TypeVar

from middleware.limits.events import LimiterEvents
from middleware.limits.types import BackendDecision, Charge, LearnedLimits, LimiterKey, LimitState
from middleware.redisconn import RedisSkipped

_log = logging.getLogger(__name__)
T = TypeVar("T")
LEGACY_RETRY_INTERVAL = 2.0  # a shared backend without the Redis policy's health (tests, custom backends)

try:  # redis is an optional dependency: without it only the memory backend exists
    from redis import RedisError

    BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, RedisSkipped)
except ImportError:  # pragma: no cover
    BACKEND_ERRORS = (OSError, RedisSkipped)


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


Route = Literal["local", "primary", "probe", "skip"]


class Router:
    """Chooses the backend for each operation; without ``primary`` everything goes to ``local``.

    A primary with the Redis policy (``ready()``, ``offline()``: the Redis backend) is probed when the policy says
    so; ``retry_interval`` (``LimitConfig.redis_retry_interval_seconds``, deprecated) adds a minimum interval
    between probes; a primary without the policy is probed every ``retry_interval`` (default 2 s).
    """

    def __init__(
        self, local: Backend, events: LimiterEvents, *, primary: Backend | None = None,
        retry_interval: float | None = None, clock: Callable[[], float] = time.monotonic,
        on_failover: Callable[[], None] | None = None,
        on_recover: Callable[[Backend], None] | None = None,
    ) -> None:
        self.local = local
        self.primary = primary
        self._events = events
        self._ready: Callable[[], bool] | None = getattr(primary, "ready", None)
        offline: Callable[[], Any] | None = getattr(primary, "offline", None)
        self._offline: Any = offline() if offline is not None else None
        if retry_interval is None:
            retry_interval = 0.0 if self._ready is not None else LEGACY_RETRY_INTERVAL
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

    def _route(self) -> Route:
        if self.primary is None:
            return "local"
        with self._lock:
            if not self._down:
                return "primary"
            now = self._clock()
            if now < self._next_try or (self._ready is not None and not self._ready()):
                return "skip"
            self._next_try = now + self._retry_interval  # this caller probes; the others stay local
            return "probe"

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._next_try = self._clock() + self._retry_interval
            if self._down:
                return
            self._down = True
        # One WARNING per outage is the Redis link's (middleware.redisconn); this is the limiter's side of it.
        _log.info("limiter: Redis unavailable (%r); using the local fallback", exc)
        if self._on_failover is not None:
            try:
                self._on_failover()
            except Exception:  # never let a hand-over hook fail a call
                _log.exception("limiter: failover hook failed")
        self._events.limiter_fallback("redis", True)

    def _recovered(self) -> None:
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down = False
        _log.info("limiter: Redis is back; leaving the local fallback")
        self._events.limiter_fallback("redis", False)

    def run(self, op: Callable[[Backend], T]) -> tuple[T, Backend]:
        """Run ``op`` on Redis if usable, else on the local backend; returns the result and who answered."""
        route = self._route()
        if route != "local" and self.primary is not None:
            try:
                if route == "skip":
                    if self._offline is not None:
                        op(self._offline)  # raises at once: counted (refused, for a reservation with fallback=fail)
                else:
                    if route == "probe" and self._on_recover is not None:
                        self._on_recover(self.primary)  # probing: restore Redis from the local state first
                    result = op(self.primary)
                    self._recovered()
                    return result, self.primary
            except BACKEND_ERRORS as exc:
                if route != "skip":
                    self._failed(exc)
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
