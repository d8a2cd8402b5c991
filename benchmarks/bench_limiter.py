"""Limiter decision cost: p50/p99 in µs for memory and Redis, against named baselines.

Baselines: the openai-cookbook parallel processor's bucket (a lock and two floats, no FIFO, no
learning) for memory; a bare Redis ``PING`` round trip (the floor of any shared decision) for Redis.
Run: ``python benchmarks/bench_limiter.py [--n 20000] [--redis-url URL]`` (starts a redis-server if no URL).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from middleware.limits import LimitConfig, Limiter, LimiterKey

KEY = LimiterKey("bench:gpt", "gpt")
BIG: dict[str, Any] = {"requests_per_window": 1e12, "tokens_per_window": 1e15}  # never waits: decision only


class CookbookBucket:
    """The cookbook's continuously refilled capacity, made thread-safe with a lock."""

    def __init__(self, rpm: float, tpm: float) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.requests, self.tokens = rpm, tpm
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self, tokens: int) -> bool:
        with self.lock:
            now = time.monotonic()
            elapsed, self.last = now - self.last, now
            self.requests = min(self.rpm, self.requests + self.rpm * elapsed / 60)
            self.tokens = min(self.tpm, self.tokens + self.tpm * elapsed / 60)
            if self.requests >= 1 and self.tokens >= tokens:
                self.requests -= 1
                self.tokens -= tokens
                return True
            return False


def measure(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and p99 of ``fn`` in microseconds."""
    for _ in range(min(1000, n // 10)):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def row(name: str, p50: float, p99: float, base: tuple[float, float] | None = None) -> None:
    ratio = f"  x{p50 / base[0]:.1f} p50 vs baseline" if base else ""
    print(f"{name:<44} p50 {p50:8.2f} µs   p99 {p99:8.2f} µs{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--redis-url")
    args = parser.parse_args()

    bucket = CookbookBucket(1e12, 1e15)
    base = measure(lambda: bucket.take(100), args.n)
    row("baseline: cookbook bucket (memory)", *base)
    mem = Limiter(LimitConfig(**BIG))
    row("Limiter.reserve (memory)", *measure(lambda: mem.reserve(KEY, 100), args.n), base)

    def reserve_settle() -> None:
        mem.settle(mem.reserve(KEY, 100), 40)

    row("Limiter.reserve + settle (memory)", *measure(reserve_settle, args.n), base)

    server = None
    url = args.redis_url
    if url is None:
        from tests.fixtures.redis_server import RedisServer

        server = RedisServer()
        server.start()
        url = server.url
    try:
        import redis

        client = redis.Redis.from_url(url)
        ping = measure(client.ping, args.n // 4)
        row("baseline: Redis PING round trip", *ping)
        red = Limiter(LimitConfig(**BIG, redis_url=url, redis_prefix="bench"))
        row("Limiter.reserve (redis, one Lua call)", *measure(lambda: red.reserve(KEY, 100), args.n // 4), ping)
        red.close()
        client.close()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
