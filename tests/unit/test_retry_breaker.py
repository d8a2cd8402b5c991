"""Circuit breaker state machine, run against the in-memory and the Redis-shared implementation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from middleware.retry import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, RedisCircuitBreaker, RetryConfig


class FakeClock:
    """A settable wall clock (large, like time.time(), so the Redis script sees realistic values)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CFG = RetryConfig(breaker_min_calls=4, breaker_failure_ratio=0.5, breaker_window_seconds=10.0,
                  breaker_open_seconds=5.0, breaker_half_open_probes=1)
Factory = Callable[[RetryConfig, FakeClock], CircuitBreaker]


@pytest.fixture(params=["memory", "redis"])
def make_breaker(request: pytest.FixtureRequest) -> Factory:
    if request.param == "memory":
        return lambda cfg, clock: CircuitBreaker(cfg, clock)
    url: str = request.getfixturevalue("redis_url")
    return lambda cfg, clock: RedisCircuitBreaker(cfg, url, prefix="test", clock=clock)


def trip(breaker: CircuitBreaker) -> str | None:
    """Two successes then failures until the ratio exceeds 0.5 with >= 4 calls; returns the last transition."""
    assert breaker.record("chat", "m", "success") is None
    assert breaker.record("chat", "m", "success") is None
    assert breaker.record("chat", "m", "failure") is None
    assert breaker.record("chat", "m", "failure") is None  # 2/4 = 0.5: reached, not exceeded
    return breaker.record("chat", "m", "failure")  # 3/5 = 0.6


def test_opens_and_fails_fast(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    assert breaker.acquire("chat", "m").allowed
    assert trip(breaker) == OPEN
    clock.advance(2.0)
    permit = breaker.acquire("chat", "m")
    assert not permit.allowed and permit.state == OPEN
    assert permit.retry_in_seconds == pytest.approx(3.0, abs=1e-3)
    assert breaker.retry_in("chat", "m") == pytest.approx(3.0, abs=1e-3)
    assert breaker.acquire("chat", "other-model").allowed  # per (endpoint, model)
    assert breaker.acquire("embeddings", "m").allowed


def test_min_calls_required(make_breaker: Factory) -> None:
    breaker = make_breaker(CFG, FakeClock())
    for _ in range(3):
        assert breaker.record("chat", "m", "failure") is None  # 100% failures, but only 3 calls
    assert breaker.record("chat", "m", "failure") == OPEN


def test_neutral_outcomes_never_open(make_breaker: Factory) -> None:
    breaker = make_breaker(CFG, FakeClock())
    for _ in range(50):
        assert breaker.record("chat", "m", "neutral") is None
    assert breaker.state("chat", "m") == CLOSED


def test_old_failures_leave_the_window(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    for _ in range(3):
        breaker.record("chat", "m", "failure")
    clock.advance(11.0)
    assert breaker.record("chat", "m", "failure") is None
    assert breaker.state("chat", "m") == CLOSED


def test_half_open_probe_success_closes(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    trip(breaker)
    clock.advance(5.0)
    probe = breaker.acquire("chat", "m")
    assert (probe.allowed, probe.state, probe.probe, probe.transition) == (True, HALF_OPEN, True, HALF_OPEN)
    second = breaker.acquire("chat", "m")
    assert not second.allowed and second.state == HALF_OPEN
    assert breaker.record("chat", "m", "success", probe=True) == CLOSED
    assert breaker.acquire("chat", "m").allowed
    assert breaker.record("chat", "m", "failure") is None  # window was reset on closing


def test_half_open_probe_failure_reopens(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    trip(breaker)
    clock.advance(6.0)
    assert breaker.acquire("chat", "m").probe
    assert breaker.record("chat", "m", "failure", probe=True) == OPEN
    permit = breaker.acquire("chat", "m")
    assert not permit.allowed and permit.retry_in_seconds == pytest.approx(5.0, abs=1e-3)


def test_half_open_neutral_probe_frees_the_slot(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.acquire("chat", "m").probe
    assert breaker.record("chat", "m", "neutral", probe=True) is None  # e.g. a 429: says nothing of health
    assert breaker.acquire("chat", "m").probe


def test_lost_probe_expires(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.acquire("chat", "m").probe  # never reports back
    clock.advance(1.0)
    assert not breaker.acquire("chat", "m").allowed
    clock.advance(5.0)
    assert breaker.acquire("chat", "m").probe


def test_several_probes_must_all_succeed(make_breaker: Factory) -> None:
    clock = FakeClock()
    cfg = RetryConfig(breaker_min_calls=4, breaker_window_seconds=10.0, breaker_open_seconds=5.0,
                      breaker_half_open_probes=2)
    breaker = make_breaker(cfg, clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.acquire("chat", "m").probe
    assert breaker.acquire("chat", "m").probe
    assert not breaker.acquire("chat", "m").allowed
    assert breaker.record("chat", "m", "success", probe=True) is None
    assert breaker.record("chat", "m", "success", probe=True) == CLOSED


def test_late_outcome_of_a_closed_permit_is_ignored_while_half_open(make_breaker: Factory) -> None:
    clock = FakeClock()
    breaker = make_breaker(CFG, clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.acquire("chat", "m").probe
    assert breaker.record("chat", "m", "failure", probe=False) is None
    assert breaker.state("chat", "m") == HALF_OPEN
