"""Learning the refill window from ``x-ratelimit-*`` headers, against the simulator's bucket model."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from middleware.errors import ConfigError, RequestTooLarge
from middleware.limits import LimitConfig, Limiter, LimiterKey
from middleware.limits.window import WindowEstimator, resolution_of, window_bounds
from middleware.simulator.ratelimit import RateLimiter

KEY = LimiterKey("win:gpt-test", "gpt-test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + 1e-9  # a real caller always arrives a little after its admission time


def drive(lim: Limiter, upstream: RateLimiter, clock: Clock, calls: list[tuple[float, int]]) -> list[str]:
    """One caller: reserve (sleeping on the fake clock), send upstream, learn; returns each outcome."""
    outcomes = []
    for gap, tokens in calls:
        clock.now += gap
        res = lim.reserve(KEY, tokens)
        decision = upstream.admit("k", tokens)
        headers = dict(decision.headers)
        if decision.allowed:
            lim.learn(KEY, headers, res)
            lim.settle(res, tokens)
            outcomes.append("ok")
        else:
            lim.on_rate_limited(KEY, decision.refused_type, decision.retry_after_s, headers, res)
            lim.release(res)
            outcomes.append(decision.refused_type or "refused")
    return outcomes


def test_bounds_of_one_observation() -> None:
    # W = L * reset / deficit, the deficit within (D - 1, D + 0.5) of D = L - remaining (rounded down or to the
    # nearest unit), the reset within one resolution either way
    low, high = window_bounds(10, 9, 0.2) or (0, 0)  # one request from full: bounded below only
    assert low == pytest.approx(10 * 0.199 / 1.5) and high == math.inf
    low, high = window_bounds(1000, 500, 1.0) or (0, 0)
    assert low == pytest.approx(1000 * 0.999 / 500.5) and high == pytest.approx(1000 * 1.001 / 499)
    low, high = window_bounds(1000, 500, 1.0, resolution=0.1) or (0, 0)  # a server rounding to 100 ms
    assert low == pytest.approx(1000 * 0.9 / 500.5) and high == pytest.approx(1000 * 1.1 / 499)
    assert window_bounds(10, 10, 0.0) is None  # full bucket: nothing to learn
    assert window_bounds(10, 5, 0.0) is None  # reset 0 is ignored
    # a short reset is wide at millisecond resolution, but it holds the truth (W = 10,000 * 2 ms / 10 = 2 s)
    low, high = window_bounds(10_000, 9_990, 0.002) or (0, 0)
    assert low == pytest.approx(10_000 * 0.001 / 10.5) and high == pytest.approx(10_000 * 0.003 / 9)
    assert window_bounds(None, 5, 1.0) is None
    assert window_bounds(10, 5, math.nan) is None


def test_resolution_is_the_coarsest_step_every_reset_fits() -> None:
    assert [resolution_of(v) for v in (6.0, 1.2, 0.35, 0.347, 0.0345)] == [1.0, 0.1, 0.01, 0.001, 0.001]
    est = WindowEstimator()
    est.observe(1000, 400, 1.2)
    est.observe(1000, 700, 0.6)
    assert est.resolution == 0.1  # no finer digit seen yet: assume 100 ms rounding
    est.observe(1000, 500, 1.003)
    assert est.resolution == 0.001


def test_estimator_is_safe_robust_and_follows_a_change() -> None:
    est = WindowEstimator(keep=8)
    assert est.estimate() is None
    assert not est.observe(100, 100, 0.0)
    est.observe(20, 19, 0.1)  # one request from full: a lower bound only, no estimate (that would be unsafe)
    assert est.estimate() is None
    # an upstream refilling 10,000 tokens over 2 s, seen at millisecond resolution: the estimate is the slower
    # end of what the observations allow, within a fraction of a percent of the truth
    for remaining in (4_000, 1_000, 7_321, 2_500):
        est.observe(10_000, remaining, round((10_000 - remaining) * 2.0 / 10_000, 3) + 0.0005)
    assert 2.0 <= est.estimate() <= 2.0 * 1.002  # type: ignore[operator]
    est.observe(10_000, 4_000, 6.001)  # the upstream now refills over 10 s: contradicts the older ones
    assert 10.0 <= est.estimate() <= 10.0 * 1.002  # type: ignore[operator]
    est2 = WindowEstimator()
    est2.observe(1e7, 0, 0.061)
    assert est2.estimate() == pytest.approx(0.061, rel=0.02)


def test_nothing_configured_converges_on_a_two_second_window() -> None:
    clock = Clock()
    lim = Limiter(LimitConfig(max_wait_seconds=30), clock=clock, sleep=clock.sleep)
    upstream = RateLimiter(rpm=20, tpm=6000, window_s=2.0, clock=clock)
    calls = [(0.0, 300 + 97 * (i % 7)) for i in range(200)]
    start = clock.now
    outcomes = drive(lim, upstream, clock, calls)
    assert outcomes.count("ok") == len(calls)
    assert lim.learned_window(KEY) == pytest.approx(2.0, rel=1e-3)
    snap = lim.snapshot(KEY)
    # the usable capacity: the limits less the margin held back (the initial 5 %, decaying with every exact
    # comparison: this upstream only ever deviates by its rounding)
    assert 20 - 3 <= snap["requests"].limit <= 20 and 6000 * 0.95 < snap["tokens"].limit <= 6000
    # goodput: the time taken is close to the lower bound of the upstream's limits
    total = sum(t for _, t in calls)
    bound = max((total - 6000) / 3000, (len(calls) - 20) / 10)
    assert bound / (clock.now - start) > 0.97


def test_configured_window_wins_unless_overridden() -> None:
    headers = {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "1",
               "x-ratelimit-reset-tokens": "1.998s"}  # a 2 s window
    cases: tuple[tuple[Any, float | None, float], ...] = (
        (True, 60.0, 60.0), (True, None, 2.0), ("override_window", 60.0, 2.0), (False, None, 60.0))
    for rule, window, expected in cases:
        clock = Clock()
        lim = Limiter(LimitConfig(requests_per_window=20, window_seconds=window, learn_from_headers=rule),
                      clock=clock, sleep=clock.sleep)
        for _ in range(20):
            lim.reserve(KEY, 0)
        lim.learn(KEY, headers)
        res = lim.reserve(KEY, 0)  # the bucket is empty: one request refills in window / 20
        assert res.wait_seconds == pytest.approx(expected / 20, rel=2e-3), (rule, window)
    with pytest.raises(ConfigError):
        LimitConfig(learn_from_headers="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LimitConfig(window_seconds=0.0)


def test_learned_window_reaches_the_fallback_too() -> None:
    from middleware.limits.memory import MemoryBackend

    config = LimitConfig()
    clock = Clock()
    primary = MemoryBackend(config, clock=clock, name="shared")
    lim = Limiter(config, clock=clock, sleep=clock.sleep, primary=primary)
    lim.learn(KEY, {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "0",
                    "x-ratelimit-reset-tokens": "4.995s"})
    assert primary._states[KEY.id].window == pytest.approx(5.0, rel=1e-2)
    assert lim._router.local._states[KEY.id].window == pytest.approx(5.0, rel=1e-2)  # type: ignore[attr-defined]


calls_strategy = st.lists(
    st.tuples(st.sampled_from([0.0, 0.0, 0.0, 0.01, 0.2, 1.0, 5.0]), st.integers(0, 100_000)),
    min_size=1, max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0.5, 2.0, 7.0, 60.0]), st.integers(1, 60), st.integers(50, 20_000), calls_strategy,
)
# resets under 50 ms were ignored: the window stayed at the 60 s default and the full-bucket call timed out
@example(window=0.5, rpm=11, tpm=50, calls=[(0.0, 1), (0.2, 4), (0.0, 50)])
def test_learned_limits_never_overrun_an_openai_like_upstream(
    window: float, rpm: int, tpm: int, calls: list[tuple[float, int]],
) -> None:
    """A caller that configures nothing is never refused by a bucket upstream, whatever its window."""
    clock = Clock()
    lim = Limiter(LimitConfig(max_wait_seconds=10 * window), clock=clock, sleep=clock.sleep)
    upstream = RateLimiter(rpm=rpm, tpm=tpm, window_s=window, clock=clock)
    fitted: list[tuple[float, int]] = [(gap, tokens % (tpm + 1)) for gap, tokens in calls]
    outcomes = drive(lim, upstream, clock, fitted)
    assert set(outcomes) <= {"ok"}, outcomes
    learned: Any = lim.learned_window(KEY)
    assert learned is None or learned >= window * (1 - 1e-6)  # never the faster, unsafe side


def test_short_resets_teach_a_short_window() -> None:
    """Regression (hypothesis): an upstream refilling over 0.5 s answers small calls with resets under 50 ms.

    They used to be ignored, so the window stayed at the 60 s default and a call needing the whole tokens
    bucket (50 of 50) was refused for needing 7.8 s, more than its 5 s budget, where the upstream admits it
    40 ms later (``reset-tokens: 40ms``).
    """
    clock = Clock()
    lim = Limiter(LimitConfig(max_wait_seconds=5.0), clock=clock, sleep=clock.sleep)
    upstream = RateLimiter(rpm=11, tpm=50, window_s=0.5, clock=clock)
    assert drive(lim, upstream, clock, [(0.0, 1), (0.2, 4)]) == ["ok", "ok"]
    learned = lim.learned_window(KEY)
    assert learned is not None and 0.5 <= learned <= 0.55  # from "46ms" for 1 request of 11: the slow end
    res = lim.reserve(KEY, 50)
    assert 0.04 <= res.wait_seconds <= 0.1  # not before the upstream has room, and not much later
    assert upstream.admit("k", 50).allowed


def test_a_call_above_the_learned_limit_is_refused_at_once() -> None:
    """A call that can never fit the limit learned from headers raises ``RequestTooLarge`` without waiting
    and without charging anything, whether the window is learned or not."""
    for reset, learns in (("0s", False), ("41ms", True)):
        clock = Clock()
        lim = Limiter(LimitConfig(max_wait_seconds=5.0), clock=clock, sleep=clock.sleep)
        lim.learn(KEY, {"x-ratelimit-limit-tokens": "50", "x-ratelimit-remaining-tokens": "46",
                        "x-ratelimit-reset-tokens": reset})
        before, start = lim.snapshot(KEY), clock.now
        with pytest.raises(RequestTooLarge) as err:
            lim.reserve(KEY, 51)
        assert (err.value.tokens, err.value.limit) == (51, 50)
        assert clock.now == start and lim.snapshot(KEY) == before
        assert (lim.learned_window(KEY) is not None) == learns


def _estimate_from_scratch(seen: list[tuple[float, float, float, float]], resolution: float) -> float | None:
    """The estimator's rule computed afresh from every observation (what its cached intervals must give)."""
    low, high = 0.0, math.inf
    for limit, remaining, reset, least in reversed(seen[-16:]):
        bounds = window_bounds(limit, remaining, reset, resolution, least)
        assert bounds is not None
        a, b = bounds
        if a > high or b < low:
            break
        low, high = max(low, a), min(high, b)
    return min(86400.0, max(0.05, high)) if math.isfinite(high) else None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.floats(0.0, 1.0), st.sampled_from([0.001, 0.01, 0.1, 1.0]),
                          st.integers(1, 3000), st.sampled_from([0.0, 1.0])), min_size=1, max_size=40))
def test_cached_intervals_give_the_estimate_computed_afresh(obs: list[tuple[int, float, float, int, float]]) -> None:
    """The estimator keeps each observation's interval (recomputed when the resolution gets finer) and its
    estimate until the next observation: always what the rule gives from scratch."""
    est = WindowEstimator()
    seen: list[tuple[float, float, float, float]] = []
    for limit, used, step, steps, least in obs:
        remaining, reset = float(math.floor(limit * (1 - used))), steps * step
        if est.observe(limit, remaining, reset, least):
            seen.append((limit, remaining, reset, least))
        assert est.estimate() == (_estimate_from_scratch(seen, est.resolution) if seen else None)


def test_shape_cache_follows_scale_and_learning() -> None:
    """The memory backend's cached capacities change with ``set_scale`` and with learned limits."""
    from middleware.limits.memory import MemoryBackend
    from middleware.limits.types import LearnedLimits

    clock = Clock()
    mem = MemoryBackend(LimitConfig(requests_per_window=100, tokens_per_window=1000, initial_margin=0.0),
                        clock=clock)
    assert mem.snapshot(KEY)["tokens"].limit == 1000
    mem.set_scale(0.5)
    assert mem.snapshot(KEY)["tokens"].limit == 500
    mem.learn(KEY, LearnedLimits({"tokens": 600.0}, {}))
    assert mem.snapshot(KEY)["tokens"].limit == 300
    mem.set_scale(1.0)
    assert mem.snapshot(KEY)["tokens"].limit == 600
    assert mem.reserve(KEY, 601, 0.0).status == "too_large"
