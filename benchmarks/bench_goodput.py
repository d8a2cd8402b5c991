"""Goodput under rate limits on an upstream that counts tokens its own way, every client in one run.

The simulator (its own process) enforces requests and tokens per window with an accounting that is
NOT the middleware's (by default): prompts counted by the openai-cookbook's gpt-3.5-turbo-0301 rule
(4 tokens per message, +3 priming), times ``--factor`` plus ``--offset`` per request, ``n * max_tokens``
charged up front with no refund, a window that is not 60 s, ``remaining`` rounded to the nearest unit
and resets rounded to the nearest ``--reset-resolution``. Usage in responses stays the exact count, as
OpenAI's does. ``--accounting exact --factor 1 --offset 0`` restores an upstream that agrees with us.

Every scenario sends the same N chat calls (a system and a user message of mixed sizes, mixed
max_tokens) from ``--threads`` threads. Goodput = lower bound / wall time, the lower bound being
``max((tokens the upstream charged - one window's tokens) / token rate, (requests - one window's
requests) / request rate)`` (its buckets start full: the burst-adjusted bound); 1.0 is the best any
client can do. 429s are the upstream's refusals (its own count), failed the calls that raised.

Scenarios: (a) raw SDK, default retries; (b) raw SDK + tenacity (wait_random_exponential, retry on
RateLimitError); (c) the openai-cookbook parallel processor's algorithm (continuously refilled
capacity with our count, a pause of 15 s per 60 s window after any 429, no correction, no headers);
(d) this middleware with the limits configured (exactly the upstream's numbers); (e) with nothing
configured (learned from headers); (f) 4 processes sharing one Redis budget, limits configured.

Run: ``python -m benchmarks.bench_goodput [--calls 600] [--threads 32] [--only abcdef]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = "gpt-4o-mini"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
SYSTEM = "You are a terse assistant. Answer in one short paragraph."
Job = tuple[str, int]


def workload(n: int, seed: int = 7) -> list[Job]:
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 300))), rng.randint(30, 350))
            for _ in range(n)]


def messages(job: Job) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": job[0]}]


def run_threads(jobs: list[Job], threads: int, call: Callable[[Job], None]) -> int:
    """Run ``call`` on every job from ``threads`` threads; returns the number of failed calls."""
    failed = [0]
    lock = threading.Lock()

    def worker(mine: list[Job]) -> None:
        for job in mine:
            try:
                call(job)
            except Exception:
                with lock:
                    failed[0] += 1

    ts = [threading.Thread(target=worker, args=(jobs[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return failed[0]


def chat(client: Any, job: Job) -> None:
    client.chat.completions.create(model=MODEL, messages=messages(job), max_tokens=job[1])


def raw_client(base_url: str, retries: int) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=retries)


Call = Callable[[Job], None]


def warm(client: Any) -> None:
    """Connect and import everything before the clock starts (``models.list`` is not rate limited)."""
    client.models.list()


def scenario_raw(args: Any, base_url: str) -> Call:
    client = raw_client(base_url, 2)
    warm(client)
    return lambda j: chat(client, j)


def scenario_tenacity(args: Any, base_url: str) -> Call:
    import openai
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

    client = raw_client(base_url, 0)
    warm(client)

    @retry(wait=wait_random_exponential(multiplier=args.window / 60, max=args.window), stop=stop_after_attempt(30),
           retry=retry_if_exception_type(openai.RateLimitError), reraise=True)
    def call(job: Job) -> None:
        chat(client, job)

    return call


class Cookbook:
    """openai-cookbook api_request_parallel_processor: capacity refilled continuously, pause after a 429."""

    def __init__(self, rpw: float, tpw: float, window: float) -> None:
        self.rpw, self.tpw, self.window = rpw, tpw, window
        self.requests, self.tokens = rpw, tpw
        self.last = time.monotonic()
        self.paused_until = 0.0
        self.lock = threading.Lock()

    def take(self, tokens: int) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                elapsed, self.last = now - self.last, now
                self.requests = min(self.rpw, self.requests + self.rpw * elapsed / self.window)
                self.tokens = min(self.tpw, self.tokens + self.tpw * elapsed / self.window)
                if now >= self.paused_until and self.requests >= 1 and self.tokens >= tokens:
                    self.requests -= 1
                    self.tokens -= tokens
                    return
            time.sleep(0.001)

    def rate_limited(self) -> None:
        with self.lock:
            self.paused_until = time.monotonic() + 15 * self.window / 60  # 15 s per 60 s window


def scenario_cookbook(args: Any, base_url: str) -> Call:
    import openai

    from middleware.simulator.counting import count_prompt_tokens

    client = raw_client(base_url, 0)
    warm(client)
    count_prompt_tokens("chat", {"model": MODEL, "messages": messages(("warm", 1))})  # tokenizer loaded
    book = Cookbook(args.rpw, args.tpw, args.window)

    def call(job: Job) -> None:
        cost = count_prompt_tokens("chat", {"model": MODEL, "messages": messages(job)}) + job[1]
        for _ in range(10):  # the cookbook's max_attempts
            book.take(cost)
            try:
                chat(client, job)
                return
            except openai.RateLimitError:
                book.rate_limited()
        raise RuntimeError("gave up")

    return call


def limit_config(args: Any, configured: bool, redis_url: str | None = None, prefix: str = "bench") -> Any:
    from middleware.limits import LimitConfig

    if not configured:
        return LimitConfig(max_wait_seconds=120)
    return LimitConfig(requests_per_window=args.rpw, tokens_per_window=args.tpw, window_seconds=args.window,
                       max_wait_seconds=120, redis_url=redis_url, redis_prefix=prefix)


def protected(base_url: str, limits: Any) -> Any:
    import openai

    from middleware import Config, protect
    from middleware.tokens import count_request_prompt_tokens

    client = protect(openai.OpenAI(base_url=base_url, api_key="sk-bench"), Config(limits=limits))
    warm(client)
    count_request_prompt_tokens("chat", {"model": MODEL, "messages": messages(("warm", 1))})  # tokenizer loaded
    return client


def scenario_configured(args: Any, base_url: str) -> Call:
    client = protected(base_url, limit_config(args, True))
    return lambda j: chat(client, j)


def scenario_learned(args: Any, base_url: str) -> Call:
    client = protected(base_url, limit_config(args, False))
    return lambda j: chat(client, j)


def _redis_worker(args: Any, base_url: str, redis_url: str, prefix: str, jobs: list[Job], threads: int,
                  barrier: Any, out: Any) -> None:
    client = protected(base_url, limit_config(args, True, redis_url, prefix))
    barrier.wait(60)
    out.put(run_threads(jobs, threads, lambda j: chat(client, j)))


def run_redis(args: Any, base_url: str, jobs: list[Job], redis_url: str) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs_n = 4
    barrier = ctx.Barrier(procs_n + 1)
    prefix = f"bench{random.randrange(1 << 30)}"
    procs = [ctx.Process(target=_redis_worker, args=(args, base_url, redis_url, prefix, jobs[i::procs_n],
                                                     max(1, args.threads // procs_n), barrier, out))
             for i in range(procs_n)]
    for p in procs:
        p.start()
    barrier.wait(60)
    start = time.monotonic()
    failed = sum(out.get(timeout=900) for _ in procs)
    wall = time.monotonic() - start
    for p in procs:
        p.join(10)
    return wall, failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--window", type=float, default=7.0)
    parser.add_argument("--rpw", type=int, default=150)
    parser.add_argument("--tpw", type=int, default=42000)
    parser.add_argument("--accounting", choices=("exact", "legacy", "chars"), default="legacy")
    parser.add_argument("--factor", type=float, default=1.2, help="upstream's multiplier on the prompt count")
    parser.add_argument("--offset", type=int, default=15, help="upstream's tokens added per request")
    parser.add_argument("--reset-resolution", type=float, default=0.1)
    parser.add_argument("--only", default="abcdef")
    args = parser.parse_args(argv)

    from middleware.simulator import SimulatorConfig, start_subprocess
    from tests.fixtures.redis_server import RedisServer

    jobs = workload(args.calls)
    disagree = args.accounting != "exact" or args.factor != 1.0 or args.offset != 0
    sim = start_subprocess(SimulatorConfig(
        rpm=args.rpw, tpm=args.tpw, window_s=args.window, ttft_s=0.05, accounting=args.accounting,
        charge_factor=args.factor, charge_offset=args.offset, charge_per_choice=True,
        remaining_rounding="nearest" if disagree else "down", reset_resolution_s=args.reset_resolution,
        reset_rounding="nearest" if disagree else "up"))
    redis = RedisServer()
    redis.start()
    scenarios: list[tuple[str, str, Callable[[Any, str], Call] | None]] = [
        ("a", "raw SDK, default retries", scenario_raw),
        ("b", "raw SDK + tenacity", scenario_tenacity),
        ("c", "cookbook parallel processor", scenario_cookbook),
        ("d", "middleware, limits configured", scenario_configured),
        ("e", "middleware, nothing configured", scenario_learned),
        ("f", "middleware, 4 processes on Redis", None),
    ]
    rate_t, rate_r = args.tpw / args.window, args.rpw / args.window
    rounding = (f"remaining and resets rounded to nearest, resets to {args.reset_resolution:g} s" if disagree
                else "our rounding")
    print(f"upstream: {args.rpw} requests and {args.tpw} tokens per {args.window:g} s; accounting {args.accounting}, "
          f"prompt x{args.factor:g} + {args.offset} per request, n * max_tokens up front, {rounding}; "
          f"{args.calls} calls from {args.threads} threads")
    print(f"{'scenario':<38} {'goodput':>8} {'wall s':>7} {'bound s':>8} {'429s':>5} {'failed':>6} {'attempts':>8}")
    try:
        for letter, name, fn in scenarios:
            if letter not in args.only:
                continue
            sim.reset_limits()
            sim.reset_stats()
            time.sleep(args.window)  # let nothing linger from the previous scenario
            sim.reset_limits()
            if fn is None:
                wall, failed = run_redis(args, sim.base_url, jobs, redis.url)
            else:
                call = fn(args, sim.base_url)  # set up (client, imports, tokenizer) before the clock starts
                sim.reset_stats()
                start = time.monotonic()
                failed = run_threads(jobs, args.threads, call)
                wall = time.monotonic() - start
            total = sim.stats()["total"]
            bound = max((total["tokens_charged"] - args.tpw) / rate_t, (total["admitted"] - args.rpw) / rate_r)
            print(f"({letter}) {name:<34} {bound / wall:>8.3f} {wall:>7.1f} {bound:>8.1f} "
                  f"{total['refused_total']:>5} {failed:>6} {total['received']:>8}", flush=True)
    finally:
        sim.stop()
        redis.stop()


if __name__ == "__main__":
    main()
