"""Circuit breaker per (endpoint, model): closed -> open -> half-open -> closed (or open again)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .config import RetryConfig
from .window import SlidingCounts

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
MAX_CIRCUITS = 4096  # circuits kept in memory; beyond it the least recently used closed ones are forgotten
_EVICTION_SCAN = 8
Outcome = Literal["success", "failure", "neutral"]
_TOTAL, _FAILURES = 0, 1


@dataclass(frozen=True)
class BreakerPermit:
    """The breaker's answer before an attempt; ``transition`` is the state entered while answering, if any."""

    allowed: bool
    state: str
    retry_in_seconds: float = 0.0
    probe: bool = False
    transition: str | None = None


@dataclass
class _Circuit:
    window: SlidingCounts
    state: str = CLOSED
    open_until: float = 0.0
    in_flight: int = 0
    successes: int = 0
    probes_expire: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CircuitBreaker:
    """In-memory, thread-safe breaker. Outcomes: "failure" counts (upstream faults), "neutral" does not.

    At most ``max_circuits`` circuits are kept (model names come from callers): beyond it, the least recently
    used *closed* circuits without a probe in flight are forgotten, a few per new circuit (a forgotten one
    starts closed again, its recent counts lost); open and half-open circuits are always kept.
    """

    def __init__(self, config: RetryConfig, clock: Callable[[], float] = time.monotonic,
                 max_circuits: int = MAX_CIRCUITS) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._max = max_circuits
        self._circuits: OrderedDict[tuple[str, str], _Circuit] = OrderedDict()

    @property
    def size(self) -> int:
        """Entries held in memory."""
        return len(self._circuits)

    def acquire(self, endpoint: str, model: str) -> BreakerPermit:
        """Ask to send one attempt; a half-open circuit lets ``breaker_half_open_probes`` through."""
        c = self._circuit(endpoint, model)
        with c.lock:
            now = self._clock()
            transition = None
            if c.state == OPEN:
                if now < c.open_until:
                    return BreakerPermit(False, OPEN, c.open_until - now)
                c.state, c.in_flight, c.successes, transition = HALF_OPEN, 0, 0, HALF_OPEN
            if c.state == HALF_OPEN:
                if c.in_flight and now >= c.probes_expire:  # probes that never reported back
                    c.in_flight = 0
                if c.in_flight + c.successes >= self.config.breaker_half_open_probes:
                    return BreakerPermit(False, HALF_OPEN, max(0.0, c.probes_expire - now), transition=transition)
                c.in_flight += 1
                c.probes_expire = now + self.config.breaker_open_seconds
                return BreakerPermit(True, HALF_OPEN, probe=True, transition=transition)
            return BreakerPermit(True, CLOSED)

    def record(self, endpoint: str, model: str, outcome: Outcome, probe: bool = False) -> str | None:
        """Report an attempt's outcome; returns the state entered, if the circuit changed state."""
        c = self._circuit(endpoint, model)
        cfg = self.config
        with c.lock:
            now = self._clock()
            if c.state == HALF_OPEN and probe:
                c.in_flight = max(0, c.in_flight - 1)
                if outcome == "failure":
                    return self._open(c, now)
                if outcome == "success":
                    c.successes += 1
                    if c.successes >= cfg.breaker_half_open_probes:
                        c.state = CLOSED
                        c.window.clear()
                        return CLOSED
                return None
            if c.state != CLOSED or outcome == "neutral":
                return None
            c.window.add(now, _TOTAL)
            if outcome == "failure":
                c.window.add(now, _FAILURES)
                total, failures = c.window.totals(now)
                if total >= cfg.breaker_min_calls and failures / total > cfg.breaker_failure_ratio:
                    return self._open(c, now)
            return None

    def state(self, endpoint: str, model: str) -> str:
        """The circuit's current state as last stored (an expired open state turns half-open on acquire)."""
        c = self._circuit(endpoint, model)
        with c.lock:
            return c.state

    def retry_in(self, endpoint: str, model: str) -> float:
        """Seconds until an open circuit admits a probe (0 when not open)."""
        c = self._circuit(endpoint, model)
        with c.lock:
            return max(0.0, c.open_until - self._clock()) if c.state == OPEN else 0.0

    def _open(self, c: _Circuit, now: float) -> str:
        c.state, c.open_until, c.in_flight, c.successes = OPEN, now + self.config.breaker_open_seconds, 0, 0
        c.window.clear()
        return OPEN

    def _circuit(self, endpoint: str, model: str) -> _Circuit:
        with self._lock:
            key = (endpoint, model)
            c = self._circuits.get(key)
            if c is None:
                self._evict()
                c = self._circuits[key] = _Circuit(SlidingCounts(self.config.breaker_window_seconds, 2))
            else:
                self._circuits.move_to_end(key)
            return c

    def _evict(self) -> None:
        for _ in range(min(_EVICTION_SCAN, len(self._circuits))):
            if len(self._circuits) < self._max:
                return
            key, c = next(iter(self._circuits.items()))
            if c.state == CLOSED and not c.in_flight:
                del self._circuits[key]
            else:
                self._circuits.move_to_end(key)  # open, or a probe in flight: live, keep it
