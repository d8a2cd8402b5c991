"""Retry budget (Finagle/gRPC style): retries may spend a fraction of recent requests, plus a small floor."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .config import RetryConfig
from .window import SlidingCounts

_DEPOSITS, _WITHDRAWALS = 0, 1
MAX_KEYS = 4096  # keys kept in memory; beyond it the least recently used are forgotten


class RetryBudget:
    """In-memory, thread-safe retry budget per key.

    Over any window, retries <= ``budget_ratio`` x requests + ``budget_min_retries_per_second`` x window:
    each original request deposits ``budget_ratio`` tokens, each retry withdraws one. At most ``max_keys``
    keys are kept (least recently used forgotten first: a forgotten key starts at the floor again).
    """

    def __init__(self, config: RetryConfig, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._max = max_keys
        self._windows: OrderedDict[str, SlidingCounts] = OrderedDict()

    @property
    def size(self) -> int:
        """Entries held in memory."""
        return len(self._windows)

    @property
    def floor(self) -> float:
        """Retries always allowed per window, whatever the traffic."""
        return self.config.budget_min_retries_per_second * self.config.budget_window_seconds

    def deposit(self, key: str) -> None:
        """Record one original request for ``key``."""
        with self._lock:
            self._window(key).add(self._clock(), _DEPOSITS)

    def try_withdraw(self, key: str) -> bool:
        """Spend one retry token for ``key``; False (nothing spent) when the budget is exhausted."""
        with self._lock:
            now = self._clock()
            window = self._window(key)
            if self._balance(window.totals(now)) < 1.0:
                return False
            window.add(now, _WITHDRAWALS)
            return True

    def balance(self, key: str) -> float:
        """Retry tokens currently available for ``key``."""
        with self._lock:
            return self._balance(self._window(key).totals(self._clock()))

    def _balance(self, totals: list[float]) -> float:
        return self.floor + self.config.budget_ratio * totals[_DEPOSITS] - totals[_WITHDRAWALS]

    def _window(self, key: str) -> SlidingCounts:
        window = self._windows.get(key)
        if window is None:
            while len(self._windows) >= self._max:
                self._windows.popitem(last=False)
            window = self._windows[key] = SlidingCounts(self.config.budget_window_seconds, 2)
        else:
            self._windows.move_to_end(key)
        return window
