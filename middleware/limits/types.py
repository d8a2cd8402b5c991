"""Value types of the limiter: keys, configuration, reservations, decisions and states."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from middleware.errors import ConfigError

DAY_SECONDS = 86400.0

# Bucket names; also the ``reason`` of a wait and the resource label of snapshots.
REQUESTS = "requests"
TOKENS = "tokens"
REQUESTS_DAY = "requests_per_day"
TOKENS_DAY = "tokens_per_day"
BUCKETS: tuple[str, ...] = (REQUESTS, TOKENS, REQUESTS_DAY, TOKENS_DAY)
TOKEN_BUCKETS = frozenset({TOKENS, TOKENS_DAY})
LEARNABLE: tuple[str, ...] = (REQUESTS, TOKENS)

# Reasons that are not a bucket name.
REASON_COOLDOWN = "cooldown"
REASON_WITHIN_LIMIT = "within_limit"
REASON_NO_LIMITS = "no_limits"

Decision = Literal["admitted", "waited"]


@dataclass(frozen=True)
class LimiterKey:
    """Identity of one shared budget.

    ``id`` is e.g. ``"<sha256(api_key)[:12]>:<model>"`` (or ``"<hash>:*"`` for an org-wide budget);
    ``model`` is only the telemetry label.
    """

    id: str
    model: str


@dataclass
class LimitConfig:
    """Limiter settings; every limit is optional (``None`` = unknown, learned from headers)."""

    requests_per_window: float | None = None
    tokens_per_window: float | None = None
    window_seconds: float = 60.0
    requests_per_day: float | None = None
    tokens_per_day: float | None = None
    max_wait_seconds: float = 60.0
    learn_from_headers: bool = True
    redis_url: str | None = None
    redis_prefix: str = "llm_middleware"
    fallback_fraction: float = 0.5
    redis_retry_interval_seconds: float = 2.0

    def __post_init__(self) -> None:
        for name in ("requests_per_window", "tokens_per_window", "requests_per_day", "tokens_per_day"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number or None, got {value!r}")
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ConfigError(f"window_seconds must be positive, got {self.window_seconds!r}")
        if not (self.max_wait_seconds >= 0):
            raise ConfigError(f"max_wait_seconds must be >= 0, got {self.max_wait_seconds!r}")
        if not (0 < self.fallback_fraction <= 1):
            raise ConfigError(f"fallback_fraction must be in (0, 1], got {self.fallback_fraction!r}")
        if not (self.redis_retry_interval_seconds >= 0):
            raise ConfigError("redis_retry_interval_seconds must be >= 0")

    def configured(self) -> dict[str, float | None]:
        """Configured capacity per bucket name."""
        return {
            REQUESTS: self.requests_per_window,
            TOKENS: self.tokens_per_window,
            REQUESTS_DAY: self.requests_per_day,
            TOKENS_DAY: self.tokens_per_day,
        }

    def window_of(self, bucket: str) -> float:
        """Refill window of a bucket in seconds."""
        return DAY_SECONDS if bucket in (REQUESTS_DAY, TOKENS_DAY) else self.window_seconds


class Debit(NamedTuple):
    """One bucket's side of a commit: enough to bound (or exactly undo) a later refund."""

    bucket: str
    cost: float
    level_after: float  # level right after the debit
    credits: float  # the bucket's cumulative credits then
    tat_before: float  # GCRA chain before and after the commit
    tat_after: float
    queue_before: float  # admission time of the previous commit


@dataclass(frozen=True)
class Charge:
    """What a reservation debited (internal bookkeeping that bounds later refunds).

    ``at`` is the backend's time of the commit and ``admit_at`` the admission time; ``epoch``
    identifies the backend state (a restarted or expired Redis key starts a new one; refunds
    across epochs are dropped).
    """

    at: float
    admit_at: float
    epoch: str
    debits: tuple[Debit, ...]


@dataclass
class Reservation:
    """Capacity committed for one call; hand it back to ``settle`` or ``release``.

    ``charge`` records the debited buckets (``None``: nothing was charged, limits were unknown).
    ``closed`` turns true once it is settled or released; later calls are no-ops.
    """

    key: LimiterKey
    tokens: int
    requests: int
    decision: Decision
    reason: str
    wait_seconds: float
    id: str
    backend: str
    charge: Charge | None = None
    closed: bool = False


@dataclass(frozen=True)
class LimitState:
    """One bucket as seen now: its limit and remaining level (negative = committed debt of queued calls)."""

    limit: float
    remaining: float
    cooldown_seconds: float = 0.0


@dataclass(frozen=True)
class BackendDecision:
    """What a backend decided for one reservation attempt.

    ``status`` is ``"ok"`` (committed; the caller waits ``wait_seconds``), ``"timeout"`` (nothing
    committed, ``wait_seconds`` is what it would have needed) or ``"too_large"`` (``limit`` is the
    capacity that the request exceeds). ``now`` is the backend's clock at the decision.
    """

    status: Literal["ok", "timeout", "too_large"]
    wait_seconds: float
    reason: str
    now: float
    charge: Charge | None = None
    limit: float = 0.0


@dataclass(frozen=True)
class LearnedLimits:
    """Limits and remaining values taken from one response's headers, per learnable bucket."""

    limits: dict[str, float]
    remaining: dict[str, float]
