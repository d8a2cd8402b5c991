"""Limiter decision cost: p50/p99 in µs for memory and Redis, against named baselines.

Baselines: the openai-cookbook parallel processor's bucket (a lock and two floats, no FIFO, no
learning) for memory; a bare Redis ``PING`` round trip (the floor of any shared decision) for Redis.

Hot path (first, always): what one call pays the in-memory limiter, ``reserve`` + ``settle``, sync and
async (``reserve_async`` awaited in a running loop), as µs per call over ``--n`` calls, the best of
``--rounds`` interleaved rounds (the least disturbed by other processes, as ``timeit`` advises), against
a bare ``threading.Lock`` acquire/release plus one dict update (the floor of any shared in-process
counter) run the same way; the ratio to it is the figure to watch. ``reserve + learn + settle`` adds
the header learning the pipeline does on every response.

Run: ``python benchmarks/bench_limiter.py [--n 20000] [--rounds 7] [--hot-only] [--redis-url URL]``
(starts a redis-server if no URL).
"""

from __future__ import annotations

import argparse
import asyncio
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


HEADERS = {  # what an OpenAI-like upstream answers (plain dict: the SDK's headers are parsed the same way)
    "x-ratelimit-limit-requests": "1000000000000", "x-ratelimit-remaining-requests": "999999999990",
    "x-ratelimit-reset-requests": "1ms", "x-ratelimit-limit-tokens": "1000000000000000",
    "x-ratelimit-remaining-tokens": "999999999990000", "x-ratelimit-reset-tokens": "1ms",
}


def per_call(fn: Callable[[int], None], n: int) -> float:
    """µs per call of ``fn(n)``, which runs n calls."""
    t0 = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t0) / 1000 / n


def hot_path(n: int, rounds: int) -> None:
    """reserve + settle per call, in-memory backend, sync and async, against a bare lock + dict update."""
    lock, counts = threading.Lock(), {KEY.id: 0}
    lim = Limiter(LimitConfig(**BIG))
    loop = asyncio.new_event_loop()

    def base(k: int) -> None:
        for _ in range(k):
            with lock:
                counts[KEY.id] += 1

    async def touch() -> None:
        with lock:
            counts[KEY.id] += 1

    def base_async(k: int) -> None:
        async def run() -> None:
            for _ in range(k):
                await touch()

        loop.run_until_complete(run())

    def sync(k: int) -> None:
        reserve, settle = lim.reserve, lim.settle
        for _ in range(k):
            settle(reserve(KEY, 100), 40)

    def sync_learn(k: int) -> None:
        reserve, learn, settle = lim.reserve, lim.learn, lim.settle
        for _ in range(k):
            res = reserve(KEY, 100)
            learn(KEY, HEADERS, res)
            settle(res, 40)

    def async_(k: int) -> None:
        async def run() -> None:
            reserve, settle = lim.reserve_async, lim.settle
            for _ in range(k):
                settle(await reserve(KEY, 100), 40)

        loop.run_until_complete(run())

    cases: dict[str, Callable[[int], None]] = {
        "baseline: Lock + dict update (sync)": base,
        "reserve + settle (memory, sync)": sync,
        "baseline: Lock + dict update (awaited coroutine)": base_async,
        "reserve_async + settle (memory, async)": async_,
        "reserve + learn + settle (memory, sync)": sync_learn,
    }
    for fn in cases.values():  # warm up
        fn(min(2000, n))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(per_call(fn, n))
    loop.close()
    us = {name: min(v) for name, v in times.items()}
    sync_base = us["baseline: Lock + dict update (sync)"]
    async_base = us["baseline: Lock + dict update (awaited coroutine)"]
    print(f"hot path: µs per call, best of {rounds} rounds of {n} calls")
    for name, value in us.items():
        base_us = async_base if "async" in name or "coroutine" in name else sync_base
        ratio = "" if name.startswith("baseline") else f"   x{value / base_us:.1f} vs its baseline"
        print(f"  {name:<50} {value:7.2f} µs{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hot-only", action="store_true", help="only the in-memory hot path")
    parser.add_argument("--redis-url")
    args = parser.parse_args()

    hot_path(args.n, args.rounds)
    if args.hot_only:
        return

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
