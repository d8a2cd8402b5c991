"""Backoff bounds per jitter kind."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from middleware.errors import ConfigError
from middleware.retry import RetryConfig, compute_backoff

bases = st.floats(min_value=0.0, max_value=5.0)
caps = st.floats(min_value=0.0, max_value=60.0)
attempts = st.integers(min_value=-3, max_value=10_000)
previous = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1_000.0))


def nominal(attempt: int, cfg: RetryConfig) -> float:
    """base * 2**(attempt-1) capped, computed exactly."""
    return float(min(Fraction(cfg.max_delay), Fraction(cfg.base_delay) * 2 ** (max(attempt, 1) - 1)))


@given(bases, caps, attempts, previous, st.integers())
def test_bounds_per_jitter(base: float, extra: float, attempt: int, prev: float | None, seed: int) -> None:
    rng = random.Random(seed)
    for jitter in ("full", "equal", "decorrelated", "none"):
        cfg = RetryConfig(base_delay=base, max_delay=base + extra, jitter=jitter)
        d = nominal(attempt, cfg)
        delay = compute_backoff(attempt, cfg, prev, rng)
        if jitter == "full":
            assert 0.0 <= delay <= d
        elif jitter == "equal":
            assert d / 2 <= delay <= d
        elif jitter == "decorrelated":
            assert base <= delay <= cfg.max_delay
        else:
            assert delay == d


def test_exponential_then_capped() -> None:
    cfg = RetryConfig(base_delay=0.5, max_delay=8.0, jitter="none")
    rng = random.Random(0)
    assert [compute_backoff(n, cfg, None, rng) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_decorrelated_grows_from_previous_delay() -> None:
    cfg = RetryConfig(base_delay=0.5, max_delay=100.0, jitter="decorrelated")
    rng = random.Random(1)
    samples = [compute_backoff(5, cfg, 10.0, rng) for _ in range(500)]
    assert min(samples) >= 0.5 and max(samples) <= 30.0
    assert max(samples) > 20.0  # spans up to 3 x previous, not just the base


def test_full_jitter_spreads() -> None:
    cfg = RetryConfig(base_delay=1.0, max_delay=1.0, jitter="full")
    rng = random.Random(2)
    samples = [compute_backoff(1, cfg, None, rng) for _ in range(500)]
    assert min(samples) < 0.1 and max(samples) > 0.9


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"base_delay": -1.0}, {"base_delay": 2.0, "max_delay": 1.0}, {"jitter": "wild"},
    {"max_retry_after": float("nan")}, {"deadline_seconds": 0.0}, {"per_class": {"rate_limt": 3}},
    {"per_class": {"rate_limit": -1}}, {"per_class": {"insufficient_quota": 1}}, {"per_class": {"billing": 2}},
    {"breaker_failure_ratio": 1.5}, {"breaker_half_open_probes": 0}, {"budget_window_seconds": 0.0},
])
def test_config_rejects_invalid(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetryConfig(**kwargs)  # type: ignore[arg-type]
