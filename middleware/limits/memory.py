"""In-process backend: the bucket algorithm on a dict of key states behind one lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from middleware.limits import buckets
from middleware.limits.types import (
    LEARNABLE,
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
        self._windows_of = config.windows
        self._margin = config.jitter_margin_seconds
        self._clock = clock
        self._scale = scale
        self._lock = threading.Lock()
        self._states: dict[str, buckets.KeyState] = {}

    def _state(self, key: LimiterKey) -> tuple[buckets.KeyState, dict[str, float], dict[str, float]]:
        state = self._states.get(key.id)
        if state is None:
            state = self._states[key.id] = buckets.KeyState()
        caps = buckets.effective_caps(self._configured, state.learned, self._scale)
        return state, *buckets.with_margin(caps, self._windows_of(state.window), self._margin)

    def reserve(self, key: LimiterKey, tokens: int, max_wait: float) -> BackendDecision:
        """Commit or refuse one reservation."""
        with self._lock:
            state, caps, windows = self._state(key)
            limits = buckets.effective_caps(self._configured, state.learned, self._scale)
            return buckets.decide(state, caps, windows, self._clock(), tokens, max_wait, self._scale, limits)

    def adjust(self, key: LimiterKey, requests: int, tokens: int, charge: Charge) -> None:
        """Give back (positive) or charge extra (negative) on the charged buckets."""
        with self._lock:
            state, caps, windows = self._state(key)
            buckets.give_back(state, caps, windows, self._clock(), requests, tokens, charge)

    def learn(self, key: LimiterKey, seen: LearnedLimits) -> dict[str, LimitState]:
        """Adopt limits from headers and correct levels downward."""
        with self._lock:
            state, _, _ = self._state(key)
            return buckets.learn(state, self._configured, self._windows_of, self._clock(), seen, self._scale,
                                 self._margin)

    def cooldown(self, key: LimiterKey, seconds: float, resources: tuple[str, ...]) -> None:
        """Block the key for ``seconds`` and empty the named buckets."""
        with self._lock:
            state, caps, windows = self._state(key)
            buckets.cooldown(state, caps, windows, self._clock(), seconds, resources)

    def cooldown_left(self, key: LimiterKey) -> float:
        """Seconds the key's cooldown still lasts."""
        with self._lock:
            state = self._states.get(key.id)
            return 0.0 if state is None else max(0.0, state.cooldown_until - self._clock())

    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]:
        """Limit and level per known bucket."""
        with self._lock:
            state, caps, windows = self._state(key)
            return buckets.snapshot(state, caps, windows, self._clock())

    def drain(self, queued: dict[str, tuple[int, int]]) -> None:
        """Empty every bucket, then charge ``queued[key_id] = (requests, tokens)`` (failover from Redis)."""
        with self._lock:
            now = self._clock()
            for key_id, state in self._states.items():
                caps, windows = buckets.with_margin(
                    buckets.effective_caps(self._configured, state.learned, self._scale),
                    self._windows_of(state.window), self._margin)
                buckets.refill(state, caps, windows, now)
                requests, tokens = queued.get(key_id, (0, 0))
                for name, b in state.buckets.items():
                    b.level = min(b.level, 0.0) - buckets.cost(name, requests, tokens)

    def export(self) -> list[tuple[str, LearnedLimits]]:
        """Per key: learned limits and window, and the levels scaled up by ``1 / scale`` (to restore Redis)."""
        with self._lock:
            now = self._clock()
            out = []
            for key_id, state in self._states.items():
                caps, windows = buckets.with_margin(
                    buckets.effective_caps(self._configured, state.learned, self._scale),
                    self._windows_of(state.window), self._margin)
                buckets.refill(state, caps, windows, now)
                levels = {n: b.level / self._scale for n, b in state.buckets.items() if n in LEARNABLE}
                out.append((key_id, LearnedLimits(dict(state.learned), levels, state.window)))
            return out

    def close(self) -> None:
        """Nothing to release."""
