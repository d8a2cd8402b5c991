"""Server-side counters for ``GET /stats`` and request arrival times for ``GET /stats/requests``."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

MAX_TIMES_PER_TAG = 10_000


@dataclass
class ModelStats:
    """Counters of one model."""

    received: int = 0
    admitted: int = 0
    served: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    tokens_charged: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "received": self.received,
            "admitted": self.admitted,
            "served": self.served,
            "refused": dict(self.refused),
            "refused_total": sum(self.refused.values()),
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "tokens_charged": self.tokens_charged,
            "tokens_used": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "total": self.prompt_tokens + self.completion_tokens,
            },
        }


class Stats:
    """Thread-safe counters per model, plus arrival times of tagged requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: defaultdict[str, ModelStats] = defaultdict(ModelStats)
        self._times: defaultdict[str, list[float]] = defaultdict(list)
        self._requests = 0

    def request(self) -> None:
        """A request reached a generation endpoint (counted before its body is read: unreadable ones too)."""
        with self._lock:
            self._requests += 1

    def received(self, model: str, tag: str | None, now: float) -> None:
        """A request arrived (``tag`` from ``x-sim-tag``)."""
        with self._lock:
            self._models[model].received += 1
            if tag is not None:
                times = self._times[tag]
                if len(times) < MAX_TIMES_PER_TAG:
                    times.append(now)

    def admitted(self, model: str, charged: int) -> None:
        """The limiter admitted a request and charged ``charged`` tokens."""
        with self._lock:
            entry = self._models[model]
            entry.admitted += 1
            entry.tokens_charged += charged

    def recharged(self, model: str, delta: int) -> None:
        """A usage correction changed the charge by ``delta`` tokens."""
        with self._lock:
            self._models[model].tokens_charged += delta

    def refused(self, model: str, kind: str) -> None:
        """A request was refused (``requests``, ``tokens``, ``too_large``, ``insufficient_quota``)."""
        with self._lock:
            self._models[model].refused[kind] += 1

    def fault(self, model: str, kind: str) -> None:
        """A fault was injected."""
        with self._lock:
            self._models[model].faults[kind] += 1

    def served(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """A response was completely sent."""
        with self._lock:
            entry = self._models[model]
            entry.served += 1
            entry.prompt_tokens += prompt_tokens
            entry.completion_tokens += completion_tokens

    def times(self, tag: str) -> list[float]:
        """Arrival times (monotonic seconds, server clock) of requests tagged ``tag``."""
        with self._lock:
            return list(self._times.get(tag, ()))

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self._models.clear()
            self._times.clear()
            self._requests = 0

    def snapshot(self) -> dict[str, Any]:
        """Per-model counters and their totals; ``requests``: every request to a generation endpoint."""
        with self._lock:
            requests = self._requests
            models = {name: entry.as_dict() for name, entry in self._models.items()}
            total = ModelStats()
            for entry in self._models.values():
                total.received += entry.received
                total.admitted += entry.admitted
                total.served += entry.served
                total.refused.update(entry.refused)
                total.faults.update(entry.faults)
                total.tokens_charged += entry.tokens_charged
                total.prompt_tokens += entry.prompt_tokens
                total.completion_tokens += entry.completion_tokens
        return {"models": models, "total": total.as_dict(), "requests": requests}
