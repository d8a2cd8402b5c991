"""Exponential backoff with jitter, and the server's retry-after taking precedence."""

from __future__ import annotations

import math
import random

from .config import RetryConfig

RETRY_AFTER_JITTER_FRACTION = 0.05
RETRY_AFTER_JITTER_MAX = 0.25


def compute_backoff(attempt: int, cfg: RetryConfig, previous_delay: float | None, rng: random.Random) -> float:
    """The delay before the retry that follows failed attempt number ``attempt`` (1-based).

    ``base * 2**(attempt-1)`` capped at ``max_delay``, then jittered: full = U(0, d), equal = d/2 + U(0, d/2),
    decorrelated = min(cap, U(base, 3 * previous)), none = d.
    """
    try:
        grown = math.ldexp(cfg.base_delay, max(attempt, 1) - 1)  # exact base * 2**n
    except OverflowError:
        grown = math.inf
    capped = min(cfg.max_delay, grown)
    if cfg.jitter == "full":
        return rng.uniform(0.0, capped)
    if cfg.jitter == "equal":
        return capped / 2 + rng.uniform(0.0, capped / 2)
    if cfg.jitter == "decorrelated":
        previous = cfg.base_delay if previous_delay is None else previous_delay
        return min(cfg.max_delay, rng.uniform(cfg.base_delay, max(cfg.base_delay, previous * 3)))
    return capped


def retry_after_delay(retry_after: float, rng: random.Random) -> float:
    """The server's delay, used as-is plus a tiny positive jitter (≤5%, ≤0.25 s) so clients do not stampede."""
    return retry_after + rng.uniform(0.0, min(retry_after * RETRY_AFTER_JITTER_FRACTION, RETRY_AFTER_JITTER_MAX))
