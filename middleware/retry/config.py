"""Retry configuration: attempts, backoff, retry-after cap, deadline, budget and breaker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from middleware.errors import ConfigError

from .classify import OPT_IN_REASONS, REASONS, RETRYABLE_REASONS

Jitter = Literal["full", "equal", "decorrelated", "none"]
JITTERS: frozenset[str] = frozenset({"full", "equal", "decorrelated", "none"})


@dataclass(frozen=True)
class RetryConfig:
    """How a call is retried. ``per_class`` maps a failure reason to its own maximum number of retries."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: Jitter = "full"
    max_retry_after: float = 60.0
    deadline_seconds: float | None = None
    per_class: Mapping[str, int] = field(default_factory=dict)
    budget_enabled: bool = True
    budget_ratio: float = 0.5
    """Retries may spend this fraction of the original requests seen over ``budget_window_seconds`` (plus the floor).

    Sized for the load we must absorb, not below it: with ``max_attempts`` 4, a background error rate ``p``
    costs ``p + p**2 + p**3`` retries per request on average (0.42 at p = 30%, 0.11 at 10%), so a ratio of 0.2
    (gRPC's example, Finagle's default) starves the retries a steady 30% 5xx rate needs and turns recoverable
    calls into failures. 0.5 covers 30% with ~20% headroom, yet still bounds a total outage at
    1.5x the original load (+ the floor) instead of the 4x that ``max_attempts`` alone would allow; and the
    breaker stops a total outage much sooner. Waiting on an open circuit is not a retry: it sends and costs
    nothing."""
    budget_min_retries_per_second: float = 1.0
    """The floor (Finagle's ``minRetriesPerSec``): this many retries per second are allowed whatever the traffic,
    so a quiet client can still retry (10 per 10-s window)."""
    budget_window_seconds: float = 10.0
    breaker_enabled: bool = True
    breaker_failure_ratio: float = 0.5
    breaker_min_calls: int = 20
    # Breaker defaults as Hystrix's (10 s window, 5 s open, 50%, 20 calls): a 15 s open time cost ~1/4 of the
    # calls after an outage in benchmarks/bench_retry.py (a failed probe under background 5xx re-opens it).
    breaker_window_seconds: float = 10.0
    breaker_open_seconds: float = 5.0
    breaker_half_open_probes: int = 1
    breaker_max_wait_seconds: float = 30.0
    """How long one call may wait, in total, for an open circuit to admit it, instead of failing at once.

    While the circuit is open the call sends nothing: it sleeps until the next half-open probe window (or polls
    while another call's probe is in flight), then asks again. When the circuit would not admit it within this
    bound (or within what remains of ``deadline_seconds``), the call fails with ``CircuitOpenError`` at once,
    without sleeping in vain. 0 fails fast as soon as the circuit is open (the classic breaker)."""
    redis_url: str | None = None
    """Share the budget and the breakers across processes through this Redis (memory fallback if it fails);
    unset: ``Config.redis.url``. Timeouts, back-off and fallback are ``Config.redis``'s, the one policy of every
    feature using Redis (``middleware.redisconn``)."""
    redis_prefix: str = "llm_middleware"

    def __post_init__(self) -> None:
        _check(self.max_attempts >= 1, "max_attempts must be >= 1")
        _check(_finite(self.base_delay) and self.base_delay >= 0, "base_delay must be a finite number >= 0")
        _check(_finite(self.max_delay) and self.max_delay >= self.base_delay, "max_delay must be finite, >= base_delay")
        _check(self.jitter in JITTERS, f"jitter must be one of {sorted(JITTERS)}")
        _check(_finite(self.max_retry_after) and self.max_retry_after >= 0, "max_retry_after must be finite, >= 0")
        _check(self.deadline_seconds is None or (_finite(self.deadline_seconds) and self.deadline_seconds > 0),
               "deadline_seconds must be None or a finite number > 0")
        for reason, retries in self.per_class.items():
            _check(reason in REASONS, f"per_class: unknown failure class {reason!r}; known: {sorted(REASONS)}")
            _check(isinstance(retries, int) and retries >= 0, f"per_class[{reason!r}] must be an int >= 0")
            _check(reason in RETRYABLE_REASONS | OPT_IN_REASONS or retries == 0,
                   f"per_class[{reason!r}]: this class is never retried")
        _check(_finite(self.budget_ratio) and self.budget_ratio >= 0, "budget_ratio must be finite, >= 0")
        _check(_finite(self.budget_min_retries_per_second) and self.budget_min_retries_per_second >= 0,
               "budget_min_retries_per_second must be finite, >= 0")
        _check(_finite(self.budget_window_seconds) and self.budget_window_seconds > 0,
               "budget_window_seconds must be > 0")
        _check(_finite(self.breaker_failure_ratio) and 0 <= self.breaker_failure_ratio <= 1,
               "breaker_failure_ratio must be within [0, 1]")
        _check(self.breaker_min_calls >= 1, "breaker_min_calls must be >= 1")
        _check(_finite(self.breaker_window_seconds) and self.breaker_window_seconds > 0,
               "breaker_window_seconds must be > 0")
        _check(_finite(self.breaker_open_seconds) and self.breaker_open_seconds > 0, "breaker_open_seconds must be > 0")
        _check(self.breaker_half_open_probes >= 1, "breaker_half_open_probes must be >= 1")
        _check(_finite(self.breaker_max_wait_seconds) and self.breaker_max_wait_seconds >= 0,
               "breaker_max_wait_seconds must be finite, >= 0")

    def max_retries_for(self, reason: str) -> int:
        """The maximum number of retries after failures of class ``reason`` (0 for terminal classes not opted in)."""
        if reason in RETRYABLE_REASONS:
            return self.per_class.get(reason, self.max_attempts - 1)
        return self.per_class.get(reason, 0) if reason in OPT_IN_REASONS else 0

    @property
    def total_retry_cap(self) -> int:
        """The hard cap on retries of one call, whatever the mix of failure classes."""
        return max(self.max_attempts - 1, *self.per_class.values(), 0)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"RetryConfig: {message}")
