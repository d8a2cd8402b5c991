"""Retry decisions: classification, backoff with jitter, retry-after, retry budget and circuit breaker.

The attempt loop lives in the pipeline; it asks a :class:`CallRetryState` what to do and does the sleeping.
"""

from .backoff import compute_backoff
from .breaker import CLOSED, HALF_OPEN, OPEN, BreakerPermit, CircuitBreaker
from .budget import RetryBudget
from .classify import FailureClass, classify
from .config import RetryConfig
from .controller import CallRetryState, RetryController, RetryDecision
from .errors import RateLimitWaitExceeded
from .events import NoopRetryEvents, RetryEvents
from .redis_breaker import RedisCircuitBreaker
from .redis_budget import RedisRetryBudget
from .retry_after import parse_retry_after

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerPermit",
    "CallRetryState",
    "CircuitBreaker",
    "FailureClass",
    "NoopRetryEvents",
    "RateLimitWaitExceeded",
    "RedisCircuitBreaker",
    "RedisRetryBudget",
    "RetryBudget",
    "RetryConfig",
    "RetryController",
    "RetryDecision",
    "RetryEvents",
    "classify",
    "compute_backoff",
    "parse_retry_after",
]
