"""In-process backend: the bucket algorithm on a bounded map of key states behind one lock.

Hot path: a reservation and its settlement take the lock once each and do no more than the bookkeeping they
record; the key's ``Shape`` (capacities and windows after the margins) is cached on its state, replaced by
the one ``learn`` ends with and dropped by ``set_scale``: the only operations that change its inputs.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
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

EVICTION_SCAN = 8  # oldest keys examined per new key once the map is full


class MemoryBackend:
    """Limits shared by the threads and tasks of one process.

    ``scale`` multiplies every capacity (configured and learned); the Redis fallback uses a fraction
    (``set_scale``) so that several processes falling back at once stay within the budget.

    At most ``config.max_keys`` key states are kept: beyond it, the least recently used *idle* keys (no
    debt, nothing queued, no cooldown: ``buckets.idle``) are forgotten, a few per new key; a forgotten
    key starts afresh (full, limits learned again from the next headers). Keys still owing or queueing
    are kept even past the bound (moved to the recent end), so live keys are never reset.
    """

    def __init__(
        self, config: LimitConfig, *, clock: Callable[[], float] = time.monotonic,
        scale: float = 1.0, name: str = "memory",
    ) -> None:
        self.name = name
        self._configured = config.configured()
        self._windows_of = config.windows
        self._margin = config.jitter_margin_seconds
        self._initial = config.held_initially
        self._max_keys = config.max_keys
        self._clock = clock
        self._scale = scale
        self._lock = threading.Lock()
        self._states: OrderedDict[str, buckets.KeyState] = OrderedDict()

    @property
    def scale(self) -> float:
        """Share of every limit this backend holds."""
        return self._scale

    def set_scale(self, scale: float) -> None:
        """Hold ``scale`` of every limit from now on (levels are clamped to the new capacities)."""
        with self._lock:
            if scale != self._scale:
                for state in self._states.values():
                    state.shape = None
            self._scale = scale

    @property
    def size(self) -> int:
        """Entries held in memory."""
        return len(self._states)

    def _shape(self, state: buckets.KeyState) -> buckets.Shape:
        """The key's shape, computed once per change of what it depends on (``KeyState.shape``)."""
        s = state.shape
        if s is None:
            s = state.shape = buckets.shape(
                state, self._configured, self._windows_of, self._scale, self._margin, self._initial)
        return s

    def _state(self, key: LimiterKey) -> tuple[buckets.KeyState, buckets.Shape]:
        key_id = key.id
        states = self._states
        state = states.get(key_id)
        if state is None:
            self._evict()
            state = states[key_id] = buckets.KeyState()
        else:
            states.move_to_end(key_id)
        return state, self._shape(state)

    def _evict(self) -> None:
        if len(self._states) < self._max_keys:
            return
        now = self._clock()
        for _ in range(min(EVICTION_SCAN, len(self._states))):
            key_id, state = next(iter(self._states.items()))
            if buckets.idle(state, self._shape(state), now):
                del self._states[key_id]
                if len(self._states) < self._max_keys:
                    return
            else:
                self._states.move_to_end(key_id)  # live: keep it, look at the next oldest

    def reserve(self, key: LimiterKey, tokens: int, max_wait: float) -> BackendDecision:
        """Commit or refuse one reservation."""
        with self._lock:
            state, s = self._state(key)
            return buckets.decide(state, s.caps, s.windows, self._clock(), tokens, max_wait, self._scale, s.full)

    def adjust(
        self, key: LimiterKey, requests: int, tokens: int, charge: Charge, raw_tokens: int | None = None,
    ) -> None:
        """Give back (positive) or charge extra (negative) on the charged buckets."""
        with self._lock:
            state, s = self._state(key)
            buckets.give_back(state, s.caps, s.windows, self._clock(), requests, tokens, charge, raw_tokens)

    def learn(self, key: LimiterKey, seen: LearnedLimits, charge: Charge | None = None) -> dict[str, LimitState]:
        """Adopt limits from headers and correct the levels (with ``charge``: to the upstream's truth)."""
        with self._lock:
            state, current = self._state(key)
            state.shape = None  # until learning is done: limits, window or margins may change
            out, state.shape = buckets.learn_shaped(
                state, self._configured, self._windows_of, self._clock(), seen, self._scale, self._margin, charge,
                self._initial, current)
            return out

    def cooldown(self, key: LimiterKey, seconds: float, resources: tuple[str, ...], empty: bool = True) -> None:
        """Block the key for ``seconds`` and (``empty``) empty the named buckets."""
        with self._lock:
            state, s = self._state(key)
            buckets.cooldown(state, s.caps, s.windows, self._clock(), seconds, resources, empty)

    def cooldown_left(self, key: LimiterKey) -> float:
        """Seconds the key's cooldown still lasts."""
        with self._lock:
            state = self._states.get(key.id)
            return 0.0 if state is None else max(0.0, state.cooldown_until - self._clock())

    def recheck(self, key: LimiterKey, charge: Charge | None, tokens: int) -> tuple[float, float]:
        """For a call waking at its admission: (cooldown left, ``buckets.shift`` of its charge)."""
        with self._lock:
            state = self._states.get(key.id)
            if state is None:
                return 0.0, 0.0
            left = max(0.0, state.cooldown_until - self._clock())
            return left, 0.0 if charge is None else buckets.shift(state, self._shape(state), charge, tokens)

    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]:
        """Limit and level per known bucket."""
        with self._lock:
            state, s = self._state(key)
            return buckets.snapshot(state, s, self._clock())

    def drain(self, queued: dict[str, tuple[int, int]]) -> None:
        """Empty every bucket, then charge ``queued[key_id] = (requests, tokens)`` (failover from Redis)."""
        with self._lock:
            now = self._clock()
            for key_id, state in self._states.items():
                s = self._shape(state)
                buckets.refill(state, s.caps, s.windows, now)
                requests, tokens = queued.get(key_id, (0, 0))
                for name, b in state.buckets.items():
                    b.level = min(b.level, 0.0) - buckets.cost(name, requests, tokens)

    def export(self) -> list[tuple[str, LearnedLimits]]:
        """Per key: learned limits, window and bias, and the levels scaled up by ``1 / scale`` (to restore Redis)."""
        with self._lock:
            now = self._clock()
            out = []
            for key_id, state in self._states.items():
                s = self._shape(state)
                buckets.refill(state, s.caps, s.windows, now)
                levels = {n: b.level / self._scale for n, b in state.buckets.items() if n in LEARNABLE}
                out.append((key_id, LearnedLimits(dict(state.learned), levels, state.window, state.bias)))
            return out

    def close(self) -> None:
        """Nothing to release."""
