"""The Redis backend against a real redis-server: same decisions as memory, shared state, fallback."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from middleware.limits import LimitConfig, Limiter, LimiterKey
from middleware.limits.redis_backend import RedisBackend
from middleware.redisconn import RedisConfig
from tests.fixtures.redis_server import RedisServer
from tests.unit.test_limits_properties import (
    CONFIG,
    KEY,
    FakeClock,
    Op,
    check_bound,
    memory_limiter,
    ops_strategy,
    run_ops,
)


class Events:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))

    def fallbacks(self) -> list[tuple[Any, ...]]:
        return [a for n, a in self.calls if n == "limiter_fallback"]


FAST = RedisConfig(backoff_initial_seconds=0.2, backoff_max_seconds=0.2)  # Redis tried again within 0.2 s


def redis_limiter(url: str, clock: FakeClock | None = None, events: Any = None, policy: RedisConfig | None = None,
                  **overrides: Any) -> Limiter:
    config = LimitConfig(**{**CONFIG, "redis_url": url, "redis_prefix": f"t{uuid.uuid4().hex[:8]}", **overrides})
    if clock is None:
        return Limiter(config, events, primary=RedisBackend(config, policy=policy) if policy else None)
    return Limiter(config, events, clock=clock, sleep=lambda s: None, primary=RedisBackend(config, clock=clock))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops_strategy)
def test_redis_decides_exactly_like_memory_and_respects_the_bound(redis_url: str, ops: list[Op]) -> None:
    clock_m, clock_r = FakeClock(), FakeClock()
    mem = run_ops(memory_limiter(clock_m), clock_m, ops, CONFIG["max_wait_seconds"])
    lim = redis_limiter(redis_url, clock_r)
    red = run_ops(lim, clock_r, ops, CONFIG["max_wait_seconds"])
    lim.close()
    assert [o[0] for o in red.outcomes] == [o[0] for o in mem.outcomes]
    assert [o[1] for o in red.outcomes] == pytest.approx([o[1] for o in mem.outcomes], abs=1e-6)
    check_bound(red, CONFIG["requests_per_window"], CONFIG["tokens_per_window"], CONFIG["window_seconds"])


def test_two_limiters_share_budget_learning_and_cooldown(redis_url: str) -> None:
    a = redis_limiter(redis_url, requests_per_window=None, tokens_per_window=None, window_seconds=60.0)
    b = Limiter(a.config)
    key = LimiterKey(f"{uuid.uuid4().hex[:12]}:m", "m")
    a.learn(key, {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2"})
    assert b.snapshot(key)["requests"].limit == 3
    assert b.reserve(key, 1).decision == "admitted"
    assert a.reserve(key, 1).decision == "admitted"
    assert a.snapshot(key)["requests"].remaining == pytest.approx(0, abs=1e-3)
    a.on_rate_limited(key, "requests", 30.0, {})
    assert b.snapshot(key)["requests"].cooldown_seconds == pytest.approx(30, abs=0.5)
    with pytest.raises(Exception, match="cooldown"):
        b.reserve(key, 1)
    a.close()
    b.close()


def test_settle_and_release_on_redis(redis_url: str) -> None:
    lim = redis_limiter(redis_url, window_seconds=600.0)
    res = lim.reserve(KEY, 80)
    lim.settle(res, 30)
    assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(70, abs=0.5)
    res2 = lim.reserve(KEY, 10)
    lim.release(res2)
    snap = lim.snapshot(KEY)
    assert snap["tokens"].remaining == pytest.approx(70, abs=0.5)
    assert snap["requests"].remaining == pytest.approx(4, abs=0.1)
    lim.close()


def test_async_on_redis_cancellation_gives_back(redis_url: str) -> None:
    lim = redis_limiter(redis_url, tokens_per_window=10, window_seconds=10.0, max_wait_seconds=30)

    async def main() -> None:
        assert (await lim.reserve_async(KEY, 10)).decision == "admitted"
        task = asyncio.create_task(lim.reserve_async(KEY, 5))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(0.2, abs=0.15)

    asyncio.run(main())
    lim.close()


def test_redis_death_falls_back_and_recovers(redis_server: RedisServer, redis_url: str) -> None:
    events = Events()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    lim = redis_limiter(redis_url, events=events, requests_per_window=100, tokens_per_window=10**6,
                        policy=FAST, redis_prefix=prefix)
    peer = redis_limiter(redis_url, requests_per_window=100, tokens_per_window=10**6, redis_prefix=prefix)
    assert peer.reserve(KEY, 1).backend == "redis"  # a second process on the same budget
    assert lim.reserve(KEY, 1).backend == "redis"
    assert lim.peers == 2 and lim.fallback_fraction == 0.5
    redis_server.kill()
    during = [lim.reserve(KEY, 1) for _ in range(20)]
    assert {r.backend for r in during} == {"fallback"}
    assert events.fallbacks() == [("redis", True)]
    assert lim.snapshot(KEY)["requests"].limit == 50  # the fallback holds 1 / (live peers) of the budget
    peer.close()
    lim.settle(during[0], 0)  # harmless on the fallback
    redis_server.restart()
    time.sleep(0.25)
    after = lim.reserve(KEY, 1)
    assert after.backend == "redis"
    assert events.fallbacks() == [("redis", True), ("redis", False)]
    lim.settle(during[1], 0)  # a fallback reservation settled after the switch back: still harmless
    lim.close()


def test_unreachable_redis_from_the_start_never_fails_a_request() -> None:
    events = Events()
    lim = Limiter(LimitConfig(requests_per_window=10, redis_url="redis://127.0.0.1:1/0"), events)
    res = lim.reserve(KEY, 5)
    assert res.backend == "fallback" and res.decision == "admitted"
    lim.settle(res, 1)
    lim.learn(KEY, {"x-ratelimit-limit-requests": "8", "x-ratelimit-remaining-requests": "8"})
    assert lim.degraded and events.fallbacks() == [("redis", True)]
    lim.close()


def test_learned_window_is_shared_and_decides_like_memory(redis_url: str) -> None:
    """Nothing configured: Redis learns limits and window exactly as memory does, and shares them."""
    from middleware.simulator.ratelimit import RateLimiter
    from tests.unit.test_limits_window import KEY as WKEY
    from tests.unit.test_limits_window import Clock, drive

    calls = [(0.0 if i % 5 else 0.3, 200 + 131 * (i % 9)) for i in range(80)]
    results = []
    for use_redis in (False, True):
        clock = Clock()
        config = LimitConfig(max_wait_seconds=30, redis_url=redis_url if use_redis else None,
                             redis_prefix=f"t{uuid.uuid4().hex[:8]}")
        primary = RedisBackend(config, clock=clock) if use_redis else None
        lim = Limiter(config, clock=clock, sleep=clock.sleep, primary=primary)
        upstream = RateLimiter(rpm=15, tpm=5000, window_s=2.5, clock=clock)
        start = clock.now
        outcomes = drive(lim, upstream, clock, calls)
        assert set(outcomes) == {"ok"}
        assert lim.learned_window(WKEY) == pytest.approx(2.5, rel=1e-3)
        results.append((clock.now - start, lim.snapshot(WKEY)))
        if use_redis:
            other = Limiter(config, clock=clock, sleep=clock.sleep, primary=RedisBackend(config, clock=clock))
            assert other.learned_window(WKEY) is None  # its own estimator saw nothing, but Redis holds the window
            clock.now += 0.5
            before = other.snapshot(WKEY)["tokens"].remaining
            clock.now += 0.5
            assert other.snapshot(WKEY)["tokens"].remaining - before == pytest.approx(1000, rel=1e-3)
            other.close()
        lim.close()
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-6)
    assert results[1][1]["tokens"].remaining == pytest.approx(results[0][1]["tokens"].remaining, abs=1e-3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops_strategy)
def test_redis_with_jitter_margin_decides_like_memory(redis_url: str, ops: list[Op]) -> None:
    clock_m, clock_r = FakeClock(), FakeClock()
    mem = run_ops(memory_limiter(clock_m, jitter_margin_seconds=0.1), clock_m, ops, CONFIG["max_wait_seconds"])
    lim = redis_limiter(redis_url, clock_r, jitter_margin_seconds=0.1)
    red = run_ops(lim, clock_r, ops, CONFIG["max_wait_seconds"])
    lim.close()
    assert [o[0] for o in red.outcomes] == [o[0] for o in mem.outcomes]
    assert [o[1] for o in red.outcomes] == pytest.approx([o[1] for o in mem.outcomes], abs=1e-6)
    red.admitted = {k: v for k, v in red.admitted.items() if v[2] <= 90}  # bigger ones pass as debt
    check_bound(red, CONFIG["requests_per_window"] * 0.9, CONFIG["tokens_per_window"] * 0.9,
                CONFIG["window_seconds"] * 0.9)


def test_redis_converges_exactly_like_memory_on_an_upstream_that_counts_differently(redis_url: str) -> None:
    """The whole learning (corrections, bias, margin, re-checks, first burst) in the Lua script decides as the
    Python code does: 32 concurrent callers against an upstream charging 1.3 x our estimate + 9."""
    from tests.unit.test_limits_convergence import simulate

    def shared(config: LimitConfig, clock: Any) -> RedisBackend:
        cfg = LimitConfig(**{**config.__dict__, "redis_url": redis_url, "redis_prefix": f"t{uuid.uuid4().hex[:8]}"})
        return RedisBackend(cfg, clock=clock)

    for configured in (False, True):
        mem = simulate(seed=5, factor=1.3, offset=9, calls=300, configured=configured)
        red = simulate(seed=5, factor=1.3, offset=9, calls=300, configured=configured, primary=shared)
        assert red.refused == pytest.approx(mem.refused, abs=1e-6)
        assert red.bias == pytest.approx(mem.bias, rel=1e-9) and red.goodput == pytest.approx(mem.goodput, rel=1e-9)
        assert 1.3 < red.bias < 1.4
