"""The limiter against an upstream that counts tokens its own way, with concurrent callers (hypothesis).

A discrete-event simulation on a fake clock: ``callers`` callers each reserve (the limiter's own admission
code, ``Limiter._admit``; the event loop does the sleeping and the wake-up re-check ``Limiter._extra``, as
``reserve`` would), reach the upstream after a random jitter, get its answer after a random latency, and
learn, settle, or handle a 429 as the pipeline does (``on_rate_limited``, release, retry after the server's
delay). The upstream is the simulator's bucket code (``middleware.simulator.ratelimit``, a different
implementation from the limiter's) charging ``ceil(factor * estimate) + offset`` per call: a count the
limiter is never told. Nothing is configured: limits, window and bias are learned from the headers.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from middleware.limits import LimitConfig, Limiter, LimiterKey, Reservation
from middleware.limits.router import Backend
from middleware.simulator.ratelimit import HeaderRounding, RateLimiter

KEY = LimiterKey("conv:m", "m")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Outcome:
    refused: list[float]  # seconds since the start of each 429
    goodput: float
    bias: float
    window: float


def simulate(*, seed: int, factor: float, offset: int, window: float = 7.0, rpw: int = 150, tpw: int = 42_000,
             callers: int = 32, calls: int = 400, jitter: float = 0.01, latency: tuple[float, float] = (0.03, 0.2),
             rounding: HeaderRounding | None = None, configured: bool = False,
             primary: Callable[[LimitConfig, Clock], Backend] | None = None, **config: Any) -> Outcome:
    """One run; ``primary`` builds a shared backend (Redis) on the simulation's clock, ``config`` adds settings."""
    rng = random.Random(seed)
    clock = Clock()
    limits = {"requests_per_window": rpw, "tokens_per_window": tpw, "window_seconds": window} if configured else {}
    cfg = LimitConfig(max_wait_seconds=1e9, **limits, **config)
    lim = Limiter(cfg, clock=clock, sleep=lambda s: None, primary=primary(cfg, clock) if primary else None)
    upstream = RateLimiter(rpw, tpw, window, clock, rounding or HeaderRounding())
    jobs = [rng.randint(100, 700) for _ in range(calls)]
    events: list[tuple[float, int, str, object]] = []
    order = itertools.count()
    start = clock.now
    pending = iter(range(calls))

    def push(at: float, kind: str, data: object) -> None:
        heapq.heappush(events, (at, next(order), kind, data))

    for _ in range(callers):
        push(start, "start", None)
    refused: list[float] = []
    charged = admitted = 0
    while events:
        at, _, kind, data = heapq.heappop(events)
        clock.now = max(clock.now, at)
        if kind == "start":
            job, waited = data if isinstance(data, tuple) else (next(pending, None), 0.0)
            if job is None:
                continue
            got = lim._admit(KEY, jobs[job], waited)  # reserve() without its sleeping
            if isinstance(got, float):  # held back until the first response of the key
                push(clock.now + got, "start", (job, waited + got))
            elif got.wait_seconds > 0:
                push(clock.now + got.wait_seconds, "wake", (job, got))
            else:
                push(clock.now + rng.uniform(0, jitter), "arrive", (job, got))
        elif kind == "wake":  # reserve()'s re-check when it wakes at its admission time
            job, res = data  # type: ignore[misc]
            extra = lim._extra(res)
            push(clock.now + extra + (rng.uniform(0, jitter) if not extra else 0), "wake" if extra else "arrive",
                 (job, res))
        elif kind == "arrive":
            job, res = data  # type: ignore[misc]
            cost = math.ceil(factor * jobs[job]) + offset
            decision = upstream.admit("k", cost)
            if decision.allowed:
                charged, admitted = charged + cost, admitted + 1
            push(clock.now + rng.uniform(*latency), "respond", (job, res, decision))
        else:
            job, res, decision = data  # type: ignore[misc]
            headers = dict(decision.headers)
            reservation: Reservation = res
            if decision.allowed:
                lim.learn(KEY, headers, reservation)
                lim.settle(reservation, jobs[job])
                push(clock.now, "start", None)
            else:
                refused.append(clock.now - start)
                lim.on_rate_limited(KEY, decision.refused_type, decision.retry_after_s, headers, reservation)
                lim.release(reservation)
                push(clock.now + decision.retry_after_s, "start", (job, 0.0))
    wall = clock.now - start
    bound = max((charged - tpw) / (tpw / window), (admitted - rpw) / (rpw / window))
    tokens = lim.snapshot(KEY)["tokens"]
    window_seen = lim.learned_window(KEY) or window
    lim.close()
    return Outcome(refused, bound / wall, tokens.bias, window_seen)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.sampled_from([1.0, 1.1, 1.2, 1.35, 1.5]),
       offset=st.sampled_from([0, 7, 20, 40]), callers=st.sampled_from([8, 16, 32]),
       window=st.sampled_from([7.0, 30.0]), jitter=st.sampled_from([0.0, 0.01, 0.02]), configured=st.booleans())
def test_converges_on_an_upstream_that_counts_differently(
    seed: int, factor: float, offset: int, callers: int, window: float, jitter: float, configured: bool,
) -> None:
    """After the first two windows no 429 (at most one per 500 calls: a rare jitter larger than every one
    seen before), the bias within the range of the upstream's per-call ratios, goodput >= 0.9 of the bound.

    The runs last five windows of binding limits. Known weak spot, not covered: windows of a couple of
    seconds with dozens of callers, where calls queued before the window was learned keep their longer waits.
    """
    tpw = int(42_000 * window / 7)
    calls = max(300, int(5 * tpw / (factor * 400 + offset)))  # the limit binds for about five windows
    out = simulate(seed=seed, factor=factor, offset=offset, callers=callers, window=window, jitter=jitter,
                   rpw=int(150 * window / 7), tpw=tpw, calls=calls, configured=configured)
    lowest, highest = factor + offset / 700, factor * 1.01 + offset / 100  # per call: ceil(f * e) + o over e
    assert lowest * 0.97 <= out.bias <= highest * 1.03, out
    assert out.goodput >= 0.9, out
    late = [t for t in out.refused if t >= 2 * window]
    assert len(late) <= max(1, calls // 500), out


def test_an_upstream_that_counts_like_us_teaches_no_bias_and_sees_no_429() -> None:
    out = simulate(seed=1, factor=1.0, offset=0, calls=600)
    assert out.refused == [] and out.bias <= 1.01 and out.goodput >= 0.97
