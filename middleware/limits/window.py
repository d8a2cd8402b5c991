"""Inferring the refill window from ``x-ratelimit-{limit,remaining,reset}-*`` (pure, never raises).

OpenAI-like limits are token buckets of capacity ``L`` refilled at ``L / W`` per second, and
``reset`` is the time until the bucket is full again: ``reset = (L - level) * W / L``. So one header
set gives ``W = L * reset / (L - level)``. ``remaining`` is the level rounded down (OpenAI and the
simulator), so the deficit ``d = L - level`` lies in ``(D - 1, D]`` with ``D = L - remaining``, and
one observation bounds the window to the interval ``[L * reset / D, L * reset / (D - 1))``
(unbounded above when ``D = 1``). Observations with ``remaining >= L`` carry no information and
are ignored, and so are those with ``reset < MIN_RESET_SECONDS`` (including ``reset = 0``): resets
are sent at millisecond resolution (rounded up by the simulator), so a 20 ms reset is known only to
5%, a 50 ms one to 2%; rounding up only ever errs towards a longer, safer window.

The estimate intersects the intervals of the most recent observations (requests and tokens alike:
both buckets share one window, as in ``LimitConfig``), newest first, stopping at the first one that
contradicts the newer ones (so a change of the upstream window is followed within a few calls).
It is the upper end of the intersection when that is finite (the slower, safe refill: exact to
``1/D``, i.e. to a few ppm for token buckets), else the lower end, clamped to
``[MIN_LEARNED_WINDOW_SECONDS, MAX_LEARNED_WINDOW_SECONDS]``.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from middleware.limits.types import MAX_LEARNED_WINDOW_SECONDS, MIN_LEARNED_WINDOW_SECONDS

DEFAULT_OBSERVATIONS = 16
MIN_RESET_SECONDS = 0.05


def window_bounds(limit: float | None, remaining: float | None, reset: float | None) -> tuple[float, float] | None:
    """The interval of windows consistent with one bucket's headers, or ``None`` if uninformative."""
    if limit is None or remaining is None or reset is None:
        return None
    if not (math.isfinite(limit) and math.isfinite(remaining) and math.isfinite(reset)):
        return None
    if limit <= 0 or reset < MIN_RESET_SECONDS or remaining >= limit:
        return None
    deficit = limit - max(0.0, remaining)
    low = limit * reset / deficit
    high = limit * reset / (deficit - 1) if deficit > 1 else math.inf
    return low, high


class WindowEstimator:
    """Robust window estimate from the last ``keep`` informative observations (thread-safe)."""

    def __init__(self, keep: int = DEFAULT_OBSERVATIONS) -> None:
        self._seen: deque[tuple[float, float]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def observe(self, limit: float | None, remaining: float | None, reset: float | None) -> bool:
        """Record one bucket's headers; returns whether they were informative."""
        bounds = window_bounds(limit, remaining, reset)
        if bounds is None:
            return False
        with self._lock:
            self._seen.append(bounds)
        return True

    def estimate(self) -> float | None:
        """The current window estimate in seconds (``None`` before any informative observation)."""
        with self._lock:
            seen = list(self._seen)
        if not seen:
            return None
        low, high = 0.0, math.inf
        for a, b in reversed(seen):
            if a > high or b < low:
                break  # contradicts newer observations: the upstream changed, forget the older ones
            low, high = max(low, a), min(high, b)
        window = high if math.isfinite(high) else low
        return min(MAX_LEARNED_WINDOW_SECONDS, max(MIN_LEARNED_WINDOW_SECONDS, window))
