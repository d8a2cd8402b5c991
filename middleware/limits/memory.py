"""In-process backend: the bucket algorithm on a dict of key states behind one lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from middleware.limits import buckets
from middleware.limits.types import (
    BUCKETS,
    BackendDecision,
    Charge,
    LearnedLimits,
    LimitConfig,
    LimiterKey,
    LimitState,
)


class MemoryBackend:
    """Limits shared by the threads and tasks of one process.

    ``scale`` multiplies every capacity (configured and learned); the Redis fallback uses
    ``fallback_fraction`` so that several processes falling back at once stay near the budget.
    """

    def __init__(
        self, config: LimitConfig, *, clock: Callable[[], float] = time.monotonic,
        scale: float = 1.0, name: str = "memory",
    ) -> None:
        self.name = name
        self._configured = config.configured()
        self._windows = {b: config.window_of(b) for b in BUCKETS}
        self._clock = clock
        self._scale = scale
        self._lock = threading.Lock()
        self._states: dict[str, buckets.KeyState] = {}

    def _state(self, key: LimiterKey) -> tuple[buckets.KeyState, dict[str, float]]:
        state = self._states.get(key.id)
        if state is None:
            state = self._states[key.id] = buckets.KeyState()
        return state, buckets.effective_caps(self._configured, state.learned, self._scale)

    def reserve(self, key: LimiterKey, tokens: int, max_wait: float) -> BackendDecision:
        """Commit or refuse one reservation."""
        with self._lock:
            state, caps = self._state(key)
            return buckets.decide(state, caps, self._windows, self._clock(), tokens, max_wait, self._scale)

    def adjust(self, key: LimiterKey, requests: int, tokens: int, charge: Charge) -> None:
        """Give back (positive) or charge extra (negative) on the charged buckets."""
        with self._lock:
            state, caps = self._state(key)
            buckets.give_back(state, caps, self._windows, self._clock(), requests, tokens, charge)

    def learn(self, key: LimiterKey, seen: LearnedLimits) -> dict[str, LimitState]:
        """Adopt limits from headers and correct levels downward."""
        with self._lock:
            state, _ = self._state(key)
            return buckets.learn(state, self._configured, self._windows, self._clock(), seen, self._scale)

    def cooldown(self, key: LimiterKey, seconds: float, resources: tuple[str, ...]) -> None:
        """Block the key for ``seconds`` and empty the named buckets."""
        with self._lock:
            state, caps = self._state(key)
            buckets.cooldown(state, caps, self._windows, self._clock(), seconds, resources)

    def cooldown_left(self, key: LimiterKey) -> float:
        """Seconds the key's cooldown still lasts."""
        with self._lock:
            state = self._states.get(key.id)
            return 0.0 if state is None else max(0.0, state.cooldown_until - self._clock())

    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]:
        """Limit and level per known bucket."""
        with self._lock:
            state, caps = self._state(key)
            return buckets.snapshot(state, caps, self._windows, self._clock())

    def close(self) -> None:
        """Nothing to release."""
