"""OpenAI-like rate limiting: continuously refilled request and token buckets per (key, model)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .durations import format_go_duration

if TYPE_CHECKING:
    from .config import SimulatorConfig


@dataclass(frozen=True)
class HeaderRounding:
    """How ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` are rounded.

    The default is ours (remaining rounded down, resets rounded up to the millisecond); another upstream may
    round remaining to the nearest unit and resets to a coarser ``reset_resolution_s`` in either direction.
    """

    remaining: str = "down"  # "down" | "nearest"
    reset_resolution_s: float = 0.001
    reset: str = "up"  # "up" | "down" | "nearest"

    def remaining_text(self, level: float) -> str:
        """The remaining header of a bucket at ``level``."""
        value = math.floor(level) if self.remaining == "down" else math.floor(level + 0.5)
        return str(max(0, value))

    def reset_text(self, seconds: float) -> str:
        """The reset header for ``seconds`` until full."""
        steps = seconds / self.reset_resolution_s
        rounded = {"up": math.ceil, "down": math.floor}.get(self.reset, lambda x: math.floor(x + 0.5))(
            round(steps, 6))
        return format_go_duration(rounded * self.reset_resolution_s)


class TokenBucket:
    """A bucket of ``capacity`` that refills continuously at ``capacity / window_s`` per second; starts full.

    The level may go negative when a usage correction charges more than was reserved.
    """

    def __init__(self, capacity: float, window_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window_s
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        """Bring the level up to date."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 if it already is)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(frozen=True)
class Decision:
    """The outcome of one admission: allowed or refused, and the headers to send either way."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]
    refused_type: str | None = None  # "requests", "tokens" or "too_large"
    retry_after_s: float = 0.0
    limit: int = 0
    used: int = 0
    requested: int = 0


class RateLimiter:
    """Per-key request and token buckets; a limit of ``None``/0 disables that bucket."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        rounding: HeaderRounding | None = None,
    ) -> None:
        self.rpm = rpm or 0
        self.tpm = tpm or 0
        self.window_s = window_s
        self.rounding = rounding or HeaderRounding()
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}

    @classmethod
    def for_config(cls, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        """The limiter a simulator configuration describes (limits, window, header rounding)."""
        rounding = HeaderRounding(config.remaining_rounding, config.reset_resolution_s, config.reset_rounding)
        return cls(config.rpm, config.tpm, config.window_s, clock, rounding)

    @property
    def enabled(self) -> bool:
        """Whether any limit is configured."""
        return bool(self.rpm or self.tpm)

    def _get(self, key: str, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        pair = self._buckets.get(key)
        if pair is None:
            pair = (
                TokenBucket(self.rpm, self.window_s, now) if self.rpm else None,
                TokenBucket(self.tpm, self.window_s, now) if self.tpm else None,
            )
            self._buckets[key] = pair
        for bucket in pair:
            if bucket is not None:
                bucket.refill(now)
        return pair

    def admit(self, key: str, tokens: int) -> Decision:
        """Charge one request and ``tokens`` to ``key`` if both fit; otherwise refuse without charging."""
        with self._lock:
            now = self._clock()
            req, tok = self._get(key, now)
            if tok is not None and tokens > tok.capacity:
                return self._refusal(req, tok, "too_large", 0.0, tok.capacity, tokens)
            if req is not None and req.level < 1:
                return self._refusal(req, tok, "requests", req.wait_for(1), req.capacity, 1)
            if tok is not None and tok.level < tokens:
                return self._refusal(req, tok, "tokens", tok.wait_for(tokens), tok.capacity, tokens)
            if req is not None:
                req.level -= 1
            if tok is not None:
                tok.level -= tokens
            return Decision(True, self._headers(req, tok))

    def correct(self, key: str, delta_tokens: int) -> None:
        """Charge ``delta_tokens`` more (negative refunds) to ``key``'s token bucket."""
        with self._lock:
            _, tok = self._get(key, self._clock())
            if tok is not None:
                tok.level = min(tok.capacity, tok.level - delta_tokens)

    def headers(self, key: str) -> tuple[tuple[str, str], ...]:
        """The current ``x-ratelimit-*`` headers of ``key`` without charging it."""
        with self._lock:
            req, tok = self._get(key, self._clock())
            return self._headers(req, tok)

    def reset(self) -> None:
        """Forget every bucket (all start full again)."""
        with self._lock:
            self._buckets.clear()

    def _refusal(
        self,
        req: TokenBucket | None,
        tok: TokenBucket | None,
        kind: str,
        wait_s: float,
        limit: float,
        requested: int,
    ) -> Decision:
        bucket = req if kind == "requests" else tok
        used = 0 if bucket is None else max(0, math.ceil(bucket.capacity - bucket.level))
        return Decision(False, self._headers(req, tok), kind, wait_s, int(limit), used, requested)

    def _headers(self, req: TokenBucket | None, tok: TokenBucket | None) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for name, bucket in (("requests", req), ("tokens", tok)):
            if bucket is None:
                continue
            out += [
                (f"x-ratelimit-limit-{name}", str(int(bucket.capacity))),
                (f"x-ratelimit-remaining-{name}", self.rounding.remaining_text(bucket.level)),
                (f"x-ratelimit-reset-{name}", self.rounding.reset_text(bucket.reset_s())),
            ]
        return tuple(out)
