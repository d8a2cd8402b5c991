"""A sliding window of summed counters, bucketed in time (not thread-safe: owners lock)."""

from __future__ import annotations

import math
from collections import deque


class SlidingCounts:
    """Sums of ``fields`` counters over the last ``window`` seconds, in ``buckets`` time slices."""

    def __init__(self, window: float, fields: int, buckets: int = 10) -> None:
        self._width = window / buckets
        self._buckets = buckets
        self._fields = fields
        self._slices: deque[tuple[int, list[float]]] = deque()

    def add(self, now: float, field: int, amount: float = 1.0) -> None:
        """Add ``amount`` to counter ``field`` at time ``now``."""
        index = self._index(now)
        self._expire(index)
        if not self._slices or self._slices[-1][0] < index:
            self._slices.append((index, [0.0] * self._fields))
        self._slices[-1][1][field] += amount

    def totals(self, now: float) -> list[float]:
        """Every counter summed over the window ending at ``now``."""
        self._expire(self._index(now))
        sums = [0.0] * self._fields
        for _, values in self._slices:
            for i, value in enumerate(values):
                sums[i] += value
        return sums

    def clear(self) -> None:
        """Forget everything."""
        self._slices.clear()

    def empty(self, now: float) -> bool:
        """True when nothing remains in the window."""
        self._expire(self._index(now))
        return not self._slices

    def _index(self, now: float) -> int:
        return math.floor(now / self._width)

    def _expire(self, index: int) -> None:
        while self._slices and self._slices[0][0] <= index - self._buckets:
            self._slices.popleft()
