"""Output-token prediction from settled usage, per (model, operation).

We predict a high quantile of the *absolute* completion tokens of the last ``window`` calls,
capped at the call's own ``max_output_tokens``. Why absolute and not completion/max ratio:
output length is set by the task (a summary is ~200 tokens whatever the ceiling), while
``max_tokens`` is usually a safety ceiling chosen far above it and varies between callers; a
ratio learnt under ``max_tokens=4096`` would grossly misjudge a call with ``max_tokens=256``
and vice versa. Capping per call keeps the absolute rule safe for small ceilings.

Quantile: nearest-rank (``sorted[ceil(q*n) - 1]``). The window is kept as a FIFO plus a sorted
list (bisect insert/delete), so memory is O(window) per key, ``predict`` is O(1) and ``observe``
O(window) memmove. Keys beyond ``max_keys`` evict the least recently used. Thread-safe.

Accuracy is measured honestly: on each ``observe`` the prediction that *would have been made*
before seeing that call is compared with its actual output.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["OutputPredictor", "PredictionAccuracy"]


@dataclass(frozen=True, slots=True)
class PredictionAccuracy:
    """Quality of recent predictions for one (model, operation).

    ``evaluated``: settled calls that had a prediction (within the last window);
    ``coverage``: fraction of those whose actual output <= prediction;
    ``mean_abs_rel_error``: mean of ``|predicted - actual| / max(actual, 1)``.
    """

    samples: int
    evaluated: int
    coverage: float
    mean_abs_rel_error: float


@dataclass(slots=True)
class _Series:
    window: int
    fifo: deque[int] = field(default_factory=deque)
    ordered: list[int] = field(default_factory=list)
    hits: deque[tuple[bool, float]] = field(default_factory=deque)

    def add(self, value: int) -> None:
        self.fifo.append(value)
        bisect.insort(self.ordered, value)
        if len(self.fifo) > self.window:
            old = self.fifo.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, old)]

    def record(self, hit: bool, error: float) -> None:
        self.hits.append((hit, error))
        if len(self.hits) > self.window:
            self.hits.popleft()


class OutputPredictor:
    """Learns output sizes from settled calls and predicts the next call's output tokens."""

    def __init__(self, quantile: float = 0.95, window: int = 256, min_samples: int = 20, max_keys: int = 512) -> None:
        if not 0.0 < quantile <= 1.0:
            raise ValueError("quantile must be in (0, 1]")
        if window < 1 or min_samples < 1 or min_samples > window:
            raise ValueError("need 1 <= min_samples <= window")
        self._quantile = quantile
        self._window = window
        self._min_samples = min_samples
        self._max_keys = max_keys
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()
        self._lock = threading.Lock()

    def _predict(self, series: _Series | None, max_output_tokens: int | None) -> int | None:
        if series is None or len(series.ordered) < self._min_samples:
            return None
        n = len(series.ordered)
        value = series.ordered[max(0, math.ceil(self._quantile * n) - 1)]
        if max_output_tokens is not None:
            value = min(value, max_output_tokens)
        return max(1, value)

    def predict(self, model: str, operation: str, max_output_tokens: int | None) -> int | None:
        """Predicted output tokens, or None until ``min_samples`` calls were observed."""
        with self._lock:
            return self._predict(self._series.get((model, operation)), max_output_tokens)

    def observe(self, model: str, operation: str, max_output_tokens: int | None, actual_output_tokens: int) -> None:
        """Learn from one settled call's actual output tokens."""
        actual = max(0, int(actual_output_tokens))
        key = (model, operation)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(self._window)
                while len(self._series) > self._max_keys:
                    self._series.popitem(last=False)
            else:
                self._series.move_to_end(key)
            predicted = self._predict(series, max_output_tokens)
            if predicted is not None:
                series.record(actual <= predicted, abs(predicted - actual) / max(actual, 1))
            series.add(actual)

    def accuracy(self, model: str, operation: str) -> PredictionAccuracy:
        """How well recent predictions for (model, operation) matched the actual outputs."""
        with self._lock:
            series = self._series.get((model, operation))
            if series is None:
                return PredictionAccuracy(0, 0, 0.0, 0.0)
            hits = list(series.hits)
            samples = len(series.fifo)
        if not hits:
            return PredictionAccuracy(samples, 0, 0.0, 0.0)
        coverage = sum(1 for hit, _ in hits if hit) / len(hits)
        return PredictionAccuracy(samples, len(hits), coverage, sum(e for _, e in hits) / len(hits))
