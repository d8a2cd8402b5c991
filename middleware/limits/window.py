"""Inferring the refill window from ``x-ratelimit-{limit,remaining,reset}-*`` (pure, never raises).

OpenAI-like limits are token buckets of capacity ``L`` refilled at ``L / W`` per second, and
``reset`` is the time until the bucket is full again: ``reset = (L - level) * W / L``. So one header
set gives ``W = L * reset / (L - level)``. Upstreams round both numbers their own way: ``remaining``
down or to the nearest unit, ``reset`` to the millisecond or to a coarser step, up, down or to the
nearest. Nothing here assumes one of them: the deficit ``L - level`` lies in ``(D - 1, D + 0.5)``
with ``D = L - remaining`` (down: ``(D - 1, D]``; nearest: ``[D - 0.5, D + 0.5)``), and ``reset``
within one *resolution* either way, the resolution
being the coarsest of 1 s, 100 ms, 10 ms and 1 ms that every reset seen so far is a multiple of (a
server rounding to 100 ms never shows a finer digit; until one shows up, the coarser assumption only
widens the intervals: the safe side). One observation then bounds the window to
``[L * (reset - res) / (D + 0.5), L * (reset + res) / max(D - 1, m)]``, ``m`` being the least deficit
the call that received the headers left: headers sent with a response right after its request was
charged show a requests bucket at least one request from full (``m = 1``); otherwise ``m = 0`` and
the interval is unbounded above when ``D <= 1``.
Observations with ``remaining >= L`` carry no information and are ignored, and so are those with
``reset = 0`` (a bucket said to be full while it is not: the rounding of an unknown step). A short
reset is kept however short: its interval is wide (the resolution dominates it) but holds the true
window all the same, and it is what a short window shows for every call worth a small part of the
limit (a 0.5 s window refills one request of 11 in 45 ms). Ignoring resets under some threshold
left such an upstream unlearned, refilling at the 60 s default: calls that the upstream would admit
within milliseconds were refused for needing more than their wait budget.

The estimate intersects the intervals of the most recent observations (requests and tokens alike:
both buckets share one window, as in ``LimitConfig``), newest first, stopping at the first one that
contradicts the newer ones (so a change of the upstream window is followed within a few calls).
It is the upper end of the intersection (the slower, safe refill), clamped to
``[MIN_LEARNED_WINDOW_SECONDS, MAX_LEARNED_WINDOW_SECONDS]``; while no observation bounds it from
above (only buckets one unit from full were seen), there is no estimate: a lower bound alone would
be the fast, unsafe side.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from middleware.limits.types import MAX_LEARNED_WINDOW_SECONDS, MIN_LEARNED_WINDOW_SECONDS

DEFAULT_OBSERVATIONS = 16
RESOLUTIONS = (1.0, 0.1, 0.01, 0.001)  # coarsest first


def resolution_of(reset: float) -> float:
    """The coarsest step of ``RESOLUTIONS`` that ``reset`` is a multiple of (1 ms when none is)."""
    for step in RESOLUTIONS:
        ratio = reset / step
        if abs(ratio - round(ratio)) < 1e-6:
            return step
    return RESOLUTIONS[-1]


def window_bounds(
    limit: float | None, remaining: float | None, reset: float | None, resolution: float = RESOLUTIONS[-1],
    min_deficit: float = 0.0,
) -> tuple[float, float] | None:
    """The interval of windows consistent with one bucket's headers, or ``None`` if uninformative.

    ``resolution``: how coarsely ``reset`` may have been rounded (either way); ``min_deficit``: the least
    the bucket can lack (the cost of the call just charged), see the module doc.
    """
    if limit is None or remaining is None or reset is None:
        return None
    if not (math.isfinite(limit) and math.isfinite(remaining) and math.isfinite(reset)):
        return None
    if limit <= 0 or reset <= 0 or remaining >= limit:
        return None
    deficit = limit - max(0.0, remaining)
    low = limit * max(0.0, reset - resolution) / (deficit + 0.5)
    least = max(deficit - 1, min_deficit)
    high = limit * (reset + resolution) / least if least > 0 else math.inf
    return low, high


class WindowEstimator:
    """Robust window estimate from the last ``keep`` informative observations (thread-safe)."""

    def __init__(self, keep: int = DEFAULT_OBSERVATIONS) -> None:
        self._seen: deque[tuple[float, float, float, float]] = deque(maxlen=keep)
        # each observation's interval at the current resolution, computed when it arrives (and again for
        # all of them when the resolution gets finer), and the estimate, until the next observation
        self._bounds: deque[tuple[float, float]] = deque(maxlen=keep)
        self._estimate: float | None = None
        self._stale = False
        self._resolution = RESOLUTIONS[0]
        self._lock = threading.Lock()

    @property
    def resolution(self) -> float:
        """The reset rounding step assumed so far."""
        return self._resolution

    def observe(self, limit: float | None, remaining: float | None, reset: float | None,
                min_deficit: float = 0.0) -> bool:
        """Record one bucket's headers; returns whether they were informative."""
        if window_bounds(limit, remaining, reset, RESOLUTIONS[-1], min_deficit) is None:
            return False
        assert limit is not None and remaining is not None and reset is not None
        with self._lock:
            resolution = min(self._resolution, resolution_of(reset))
            if resolution != self._resolution:
                self._resolution = resolution
                self._bounds.clear()
                self._bounds.extend(_bounds(obs, resolution) for obs in self._seen)
            obs = (limit, remaining, reset, min_deficit)
            self._seen.append(obs)
            self._bounds.append(_bounds(obs, resolution))
            self._stale = True
        return True

    def estimate(self) -> float | None:
        """The current window estimate in seconds (``None`` before any informative observation)."""
        with self._lock:
            if self._stale:
                self._estimate = _intersect(self._bounds)
                self._stale = False
            return self._estimate


def _bounds(obs: tuple[float, float, float, float], resolution: float) -> tuple[float, float]:
    limit, remaining, reset, least = obs
    bounds = window_bounds(limit, remaining, reset, resolution, least)
    assert bounds is not None  # informative at 1 ms: at any resolution (it only widens the interval)
    return bounds


def _intersect(intervals: deque[tuple[float, float]]) -> float | None:
    """The estimate from the intervals, oldest first (see the module doc)."""
    low, high = 0.0, math.inf
    for a, b in reversed(intervals):
        if a > high or b < low:
            break  # contradicts newer observations: the upstream changed, forget the older ones
        low, high = max(low, a), min(high, b)
    if not math.isfinite(high):
        return None
    return min(MAX_LEARNED_WINDOW_SECONDS, max(MIN_LEARNED_WINDOW_SECONDS, high))
