"""Value types of the limiter: keys, configuration, reservations, decisions and states."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from middleware.errors import ConfigError

DAY_SECONDS = 86400.0
DEFAULT_FALLBACK_FRACTION = 0.5  # while Redis is down and no peer count was ever known
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
    ``model`` is only the telemetry label. ``max_wait`` is not part of the identity: the wait budget left to
    the one call this key is reserved for (``None``: ``LimitConfig.max_wait_seconds``); the pipeline sets it
    so that a call that already waited (for capacity, or after 429s) never waits longer than its budget.
    """

    id: str
    model: str
    max_wait: float | None = field(default=None, compare=False)

    def budgeted(self, max_wait: float) -> LimiterKey:
        """The same key for one call that may wait at most ``max_wait`` seconds more."""
        return LimiterKey(self.id, self.model, max_wait)


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
    """The limiter's Redis (unset: ``Config.redis.url``; unset too: this process only); timeouts, back-off and
    fallback are ``Config.redis``'s (``middleware.redisconn``)."""
    redis_prefix: str = "llm_middleware"
    fallback_fraction: float | None = None
    """Share of the budget one process holds while Redis is down. ``None`` (default): ``1 / N``, N being the
    live processes last counted in Redis (the peers heartbeat); ``DEFAULT_FALLBACK_FRACTION`` while no count
    is known (Redis down from the start)."""
    redis_retry_interval_seconds: float | None = None
    """Deprecated: when Redis is tried again after a failure is the shared Redis policy's back-off
    (``Config.redis``, ``middleware.redisconn``). A value set here only adds a minimum interval between probes."""
    peer_ttl_seconds: float = 10.0
    """A process counts as a live peer for this long after its last heartbeat (sent every quarter of it)."""
    initial_margin: float = 0.05
    """Share of each limit held back until the upstream's headers were first compared with a paced call's
    prediction (the upstream's count is unknown until then); the learned margin takes over from there and
    decays. 0 disables it; without ``learn_from_headers`` it never applies."""
    initial_concurrency: int = 4
    """Before the first response of a key with no known limit: at most this many calls in flight (0: no cap)."""
    initial_tokens: int | None = 16_000
    """... and at most this many tokens reserved by them (a larger call still goes alone; ``None``: no cap)."""
    initial_wait_seconds: float = 10.0
    """The longest a call waits for that first response before it is sent anyway."""
    max_keys: int = 4096
    """Per-key state kept in memory (least recently used idle keys are forgotten beyond it)."""

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
        if self.fallback_fraction is not None and not (0 < self.fallback_fraction <= 1):
            raise ConfigError(f"fallback_fraction must be in (0, 1] or None, got {self.fallback_fraction!r}")
        if self.redis_retry_interval_seconds is not None and not (self.redis_retry_interval_seconds >= 0):
            raise ConfigError("redis_retry_interval_seconds must be None or >= 0")
        if not (math.isfinite(self.peer_ttl_seconds) and self.peer_ttl_seconds > 0):
            raise ConfigError(f"peer_ttl_seconds must be > 0, got {self.peer_ttl_seconds!r}")
        if not (math.isfinite(self.initial_margin) and 0 <= self.initial_margin < 0.5):
            raise ConfigError(f"initial_margin must be in [0, 0.5), got {self.initial_margin!r}")
        if not (isinstance(self.initial_concurrency, int) and self.initial_concurrency >= 0):
            raise ConfigError(f"initial_concurrency must be an int >= 0, got {self.initial_concurrency!r}")
        if self.initial_tokens is not None and not (isinstance(self.initial_tokens, int) and self.initial_tokens > 0):
            raise ConfigError(f"initial_tokens must be a positive int or None, got {self.initial_tokens!r}")
        if not (self.initial_wait_seconds >= 0):
            raise ConfigError(f"initial_wait_seconds must be >= 0, got {self.initial_wait_seconds!r}")
        if not (isinstance(self.max_keys, int) and self.max_keys >= 1):
            raise ConfigError(f"max_keys must be an int >= 1, got {self.max_keys!r}")

    @property
    def held_initially(self) -> float:
        """The initial margin in force (0 when nothing is learned from headers)."""
        return self.initial_margin if self.learn_from_headers else 0.0

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
    """One bucket's side of a commit: enough to bound (or exactly undo) a later refund, and to compare the
    upstream's ``remaining`` header for this call with what the model predicted (``buckets.correct``)."""

    bucket: str
    cost: float
    level_after: float  # level right after the debit
    credits: float  # the bucket's cumulative credits then
    tat_before: float  # GCRA chain before and after the commit
    tat_after: float
    queue_before: float  # admission time of the previous commit
    expected: float = 0.0  # the upstream's level predicted right after this call reaches it (margin included)
    corrections: float = 0.0  # the bucket's cumulative corrections then
    spent: float = 0.0  # cumulative cost committed (net of adjustments), this commit included
    raw: float = 0.0  # the same in uncorrected units (tokens before the learned bias)
    seq: float = 0.0  # commit sequence number of the bucket


@dataclass(frozen=True)
class Charge:
    """What a reservation debited (internal bookkeeping that bounds later refunds).

    ``at`` is the backend's time of the commit and ``admit_at`` the admission time; ``epoch``
    identifies the backend state (a restarted or expired Redis key starts a new one; refunds
    across epochs are dropped). ``delay``: how much later than ``admit_at`` the call was sent
    (it waited for a cooldown or a correction: the upstream refilled meanwhile).
    """

    at: float
    admit_at: float
    epoch: str
    debits: tuple[Debit, ...]
    delay: float = 0.0


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
    probe: bool = False  # admitted before any limit of the key was known (holds an initial slot)

    @property
    def charged_tokens(self) -> int:
        """Tokens debited from the tokens bucket (``tokens`` times the learned bias), else ``tokens``."""
        if self.charge is not None:
            for d in self.charge.debits:
                if d.bucket in TOKEN_BUCKETS:
                    return int(d.cost)
        return self.tokens


@dataclass(frozen=True)
class LimitState:
    """One bucket as seen now: its limit and remaining level (negative = committed debt of queued calls)."""

    limit: float
    remaining: float
    cooldown_seconds: float = 0.0
    bias: float = 1.0  # learned ratio of the upstream's token count to our estimate (token buckets)
    margin: float = 0.0  # capacity held back, learned from the upstream's deviations (units of the bucket)
    used: bool = False  # (``learn``) the headers were compared with the prediction of the call they answer


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
    bias: float | None = None  # a token bias learned elsewhere (Redis) to adopt (None: keep)
