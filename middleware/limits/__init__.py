"""Request and token budgets: token buckets with FIFO debt, learned from headers, shared via Redis."""

from middleware.limits.events import LimiterEvents, NoopEvents
from middleware.limits.headers import RatelimitHeaders, format_go_duration, parse_go_duration, parse_ratelimit_headers
from middleware.limits.limiter import DEFAULT_COOLDOWN_SECONDS, Limiter
from middleware.limits.types import LimitConfig, LimiterKey, LimitState, Reservation

__all__ = [
    "DEFAULT_COOLDOWN_SECONDS",
    "LimitConfig",
    "LimitState",
    "Limiter",
    "LimiterEvents",
    "LimiterKey",
    "NoopEvents",
    "RatelimitHeaders",
    "Reservation",
    "format_go_duration",
    "parse_go_duration",
    "parse_ratelimit_headers",
]
