"""Property tests: the limiter never admits more than capacity + refill in any window, never deadlocks.

Callers arrive at a fake clock and do not sleep, so reservations pile up as debt exactly as concurrent
callers would; each one's admission time is arrival + computed wait. ``run_ops`` and ``check_bound``
are reused by the Redis integration tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from middleware.errors import RequestTooLarge, ThrottleTimeout
from middleware.limits import LimitConfig, Limiter, LimiterKey, Reservation

KEY = LimiterKey("prop:m", "m")
# the bucket algorithm itself: no margin held back before the first comparison with an upstream
CONFIG = {"requests_per_window": 5, "tokens_per_window": 100, "window_seconds": 1.0, "max_wait_seconds": 2.0,
          "initial_margin": 0.0}

Op = tuple[float, str, int, int]  # gap seconds, kind, tokens, actual tokens
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.3, 1.5]),
        st.sampled_from(["reserve", "reserve", "reserve", "settle", "release"]),
        st.integers(0, 130),
        st.integers(0, 200),
    ),
    max_size=60,
)


class FakeClock:
    """Settable time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """What a sequence of operations produced."""

    outcomes: list[tuple[str, float]] = field(default_factory=list)
    admitted: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # id -> (time, requests, tokens)


def run_ops(limiter: Limiter, clock: FakeClock, ops: list[Op], max_wait: float) -> Run:
    """Apply ``ops``; assert no reservation waits longer than ``max_wait`` (no deadlock)."""
    run = Run()
    open_: list[tuple[float, Reservation]] = []
    for gap, kind, tokens, actual in ops:
        clock.now += gap
        if kind == "reserve":
            try:
                res = limiter.reserve(KEY, tokens)
            except ThrottleTimeout as exc:
                assert exc.needed_seconds > max_wait
                run.outcomes.append(("timeout", exc.needed_seconds))
                continue
            except RequestTooLarge:
                run.outcomes.append(("too_large", 0.0))
                continue
            assert 0 <= res.wait_seconds <= max_wait
            run.outcomes.append((res.decision, res.wait_seconds))
            run.admitted[res.id] = (clock.now + res.wait_seconds, 1, tokens)
            open_.append((clock.now + res.wait_seconds, res))
            continue
        ready = [pair for pair in open_ if pair[0] <= clock.now]  # only calls already admitted can end
        if not ready:
            continue
        at, res = ready[tokens % len(ready)]
        open_.remove((at, res))
        if kind == "settle":
            limiter.settle(res, actual)
            run.admitted[res.id] = (at, 1, min(res.tokens, actual))  # extra usage is upstream's, not admitted
        else:
            limiter.release(res)
            run.admitted[res.id] = (at, 0, 0)
        run.outcomes.append((kind, 0.0))
    return run


def check_bound(run: Run, requests_cap: float, tokens_cap: float, window: float) -> None:
    """In every interval [a, b] the admitted amount is at most capacity + refill over b - a."""
    events = sorted(run.admitted.values())
    for column, cap in ((1, requests_cap), (2, tokens_cap)):
        for i in range(len(events)):
            total = 0.0
            for j in range(i, len(events)):
                total += events[j][column]
                span = events[j][0] - events[i][0]
                assert total <= cap + cap * span / window + 1e-6, (column, events[i][0], span, total)


def memory_limiter(clock: FakeClock, **overrides: Any) -> Limiter:
    return Limiter(LimitConfig(**{**CONFIG, **overrides}), clock=clock, sleep=lambda s: None)


@settings(max_examples=3000, deadline=None)
@given(ops_strategy)
def test_memory_never_exceeds_capacity_in_any_window(ops: list[Op]) -> None:
    clock = FakeClock()
    run = run_ops(memory_limiter(clock), clock, ops, CONFIG["max_wait_seconds"])
    check_bound(run, CONFIG["requests_per_window"], CONFIG["tokens_per_window"], CONFIG["window_seconds"])


@settings(max_examples=100, deadline=None)
@given(ops_strategy)
def test_fallback_scaled_limiter_keeps_its_fraction(ops: list[Op]) -> None:
    """The local fallback of a Redis limiter holds ``fallback_fraction`` of the budget."""
    from middleware.limits.memory import MemoryBackend
    from middleware.limits.router import Router

    clock = FakeClock()
    lim = memory_limiter(clock)
    lim._router = Router(MemoryBackend(lim.config, clock=clock, scale=0.5, name="fallback"), lim._events)
    run = run_ops(lim, clock, ops, CONFIG["max_wait_seconds"])
    # requests bigger than the scaled capacity are still admitted (as debt), so bound the others only
    run.admitted = {k: v for k, v in run.admitted.items() if v[2] <= 50}
    check_bound(run, 2.5, 50, 1.0)


@settings(max_examples=500, deadline=None)
@given(ops_strategy)
def test_jitter_margin_keeps_the_rate_and_lowers_the_burst(ops: list[Op]) -> None:
    """With margin J the bound is (cap - rate * J) + rate * span: calls J seconds late cannot overrun."""
    clock = FakeClock()
    run = run_ops(memory_limiter(clock, jitter_margin_seconds=0.1), clock, ops, CONFIG["max_wait_seconds"])
    run.admitted = {k: v for k, v in run.admitted.items() if v[2] <= 90}  # bigger ones pass as debt
    check_bound(run, CONFIG["requests_per_window"] * 0.9, CONFIG["tokens_per_window"] * 0.9,
                CONFIG["window_seconds"] * 0.9)
