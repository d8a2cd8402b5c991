"""The latency model: time to first token, tokens per second, seeded jitter, one time scale."""

from __future__ import annotations

import asyncio
import random
import time

_YIELD_EVERY = 128


class Latency:
    """Delays derived from the configuration; every delay is multiplied by ``time_scale``."""

    def __init__(self, ttft_s: float, tokens_per_s: float, jitter: float, time_scale: float, seed: int) -> None:
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s
        self.jitter = jitter
        self.time_scale = time_scale
        self._rng = random.Random(seed)

    def scaled(self, seconds: float) -> float:
        """``seconds`` times the time scale."""
        return max(0.0, seconds * self.time_scale)

    def _jittered(self, seconds: float) -> float:
        if self.jitter and seconds:
            seconds *= 1.0 + self.jitter * (2.0 * self._rng.random() - 1.0)
        return self.scaled(seconds)

    def first_token(self) -> float:
        """Seconds before the first token."""
        return self._jittered(self.ttft_s)

    def per_token(self) -> float:
        """Seconds between two tokens (0 when unlimited)."""
        return self._jittered(1.0 / self.tokens_per_s) if self.tokens_per_s > 0 else 0.0

    def pacer(self) -> Pacer:
        """A pacer for one generation."""
        return Pacer(self.first_token(), self.per_token())

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (already scaled)."""
        if seconds > 0:
            await asyncio.sleep(seconds)


class Pacer:
    """Sleeps so that token ``i`` leaves no earlier than ``start + ttft + i * interval``."""

    def __init__(self, ttft: float, interval: float) -> None:
        self.ttft = ttft
        self.interval = interval
        self.start = time.monotonic()

    def total(self, tokens: int) -> float:
        """Seconds a non-streamed generation of ``tokens`` takes."""
        return self.ttft + tokens * self.interval

    def shift(self, seconds: float) -> None:
        """Move the schedule later (after a stall)."""
        self.start += seconds

    async def before(self, index: int) -> None:
        """Wait until token ``index`` is due; yields to the loop regularly even when unlimited."""
        due = self.start + self.ttft + index * self.interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif index % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
