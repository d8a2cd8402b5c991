"""Value types of the limiter: keys, configuration, reservations, decisions and states."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from middleware.errors import ConfigError

DAY_SECONDS = 86400.0
DEFAULT_WINDOW_SECONDS = 60.0  # the per-minute window of OpenAI's RPM/TPM, used until a window is learned
MIN_LEARNED_WINDOW_SECONDS = 0.05  # learned windows are clamped to this range
MAX_LEARNED_WINDOW_SECONDS = DAY_SECONDS

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


LearnRule = bool | Literal["override_window"]


@dataclass
class LimitConfig:
    """Limiter settings; every limit is optional (``None`` = unknown, learned from headers).

    ``window_seconds`` is the refill window of the requests and tokens buckets (each refills
    ``limit / window`` per second). ``None`` means "60 s until learned": the window is then inferred
    from the ``x-ratelimit-reset-*`` headers (see ``middleware.limits.window``).

    ``learn_from_headers``: ``True`` (default) learns limits from ``x-ratelimit-limit-*`` (the
    capacity is the smaller of configured and learned), lowers levels to ``x-ratelimit-remaining-*``,
    and learns the window only when ``window_seconds`` is ``None`` (a configured window wins);
    ``"override_window"`` does the same but a learned window also replaces a configured one (which
    is used until the first estimate); ``False`` learns nothing.

    ``jitter_margin_seconds`` (J): each requests/tokens bucket holds at most ``limit - rate * J``
    (its refill rate stays ``limit / window``), so calls admitted on schedule may reach upstream up to
    J seconds out of order (threads, processes, network) without overrunning upstream's bucket; it
    costs ``rate * J`` once, not a share of the rate. Capped at half the window. Snapshots report
    this usable capacity as the limit.
    """

    requests_per_window: float | None = None
    tokens_per_window: float | None = None
    window_seconds: float | None = None
    requests_per_day: float | None = None
    tokens_per_day: float | None = None
    max_wait_seconds: float = 60.0
    jitter_margin_seconds: float = 0.0
    learn_from_headers: LearnRule = True
    redis_url: str | None = None
    redis_prefix: str = "llm_middleware"
    fallback_fraction: float = 0.5
    redis_retry_interval_seconds: float = 2.0

    def __post_init__(self) -> None:
        for name in ("requests_per_window", "tokens_per_window", "requests_per_day", "tokens_per_day"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number or None, got {value!r}")
        if self.window_seconds is not None and not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ConfigError(f"window_seconds must be positive or None, got {self.window_seconds!r}")
        if self.learn_from_headers not in (True, False, "override_window"):
            raise ConfigError(f"learn_from_headers must be True, False or 'override_window', "
                              f"got {self.learn_from_headers!r}")
        if not (math.isfinite(self.jitter_margin_seconds) and self.jitter_margin_seconds >= 0):
            raise ConfigError(f"jitter_margin_seconds must be >= 0, got {self.jitter_margin_seconds!r}")
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

    @property
    def learns_window(self) -> bool:
        """Whether a window learned from headers is used (see the class doc)."""
        return self.learn_from_headers == "override_window" or (
            self.learn_from_headers is True and self.window_seconds is None
        )

    @property
    def base_window(self) -> float:
        """The window used until one is learned: the configured one, else 60 s."""
        return DEFAULT_WINDOW_SECONDS if self.window_seconds is None else self.window_seconds

    def windows(self, learned: float | None = None) -> dict[str, float]:
        """Refill window per bucket in seconds, given the window learned for a key (if any)."""
        win = learned if learned is not None and self.learns_window else self.base_window
        return {REQUESTS: win, TOKENS: win, REQUESTS_DAY: DAY_SECONDS, TOKENS_DAY: DAY_SECONDS}

    def window_of(self, bucket: str) -> float:
        """Refill window of a bucket in seconds before any window is learned."""
        return self.windows()[bucket]


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
    window: float | None = None  # refill window inferred from the reset headers (None: no estimate)
