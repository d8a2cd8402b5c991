"""Redis-shared retry budget and breaker: shared across instances, and a memory fallback when Redis fails."""

from __future__ import annotations

import random
import socket
import time

import pytest

from middleware.redisconn import RedisConfig, RedisLink
from middleware.retry import (
    OPEN,
    RedisCircuitBreaker,
    RedisRetryBudget,
    RetryConfig,
    RetryController,
)
from tests.fixtures.redis_server import RedisServer
from tests.unit.test_retry_breaker import FakeClock
from tests.unit.test_retry_classify import status_error
from tests.unit.test_retry_controller import run

BUDGET = RetryConfig(breaker_enabled=False, budget_ratio=0.5, budget_min_retries_per_second=0.2,
                     budget_window_seconds=10.0)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


def test_budget_is_shared_between_processes(redis_url: str) -> None:
    clock = FakeClock()
    a = RedisRetryBudget(BUDGET, redis_url, prefix="t", clock=clock)
    b = RedisRetryBudget(BUDGET, redis_url, prefix="t", clock=clock)
    assert b.balance("k") == pytest.approx(2.0)  # the floor: 0.2/s x 10 s
    for _ in range(4):
        a.deposit("k")
    assert b.balance("k") == pytest.approx(4.0)
    assert [b.try_withdraw("k") for _ in range(5)] == [True, True, True, True, False]
    assert a.balance("k") == pytest.approx(0.0)
    assert RedisRetryBudget(BUDGET, redis_url, prefix="other", clock=clock).balance("k") == pytest.approx(2.0)
    clock.advance(10.0)
    assert a.balance("k") == pytest.approx(2.0)  # deposits and withdrawals left the window


def test_shared_budget_stops_a_storm_across_instances(redis_url: str) -> None:
    cfg = RetryConfig(breaker_enabled=False, budget_ratio=0.2, budget_min_retries_per_second=1.0,
                      budget_window_seconds=10.0)
    clock = FakeClock()
    controllers = [RetryController(cfg, RedisRetryBudget(cfg, redis_url, clock=clock), clock=clock,
                                   rng=random.Random(i)) for i in range(3)]
    retries = 0
    for i in range(150):
        retries += len(run(controllers[i % 3].start("key", "chat", "m"), status_error(503))) - 1
    assert 0.2 * 150 <= retries <= 0.2 * 150 + 10.0  # one budget, not three


def test_breaker_state_is_shared(redis_url: str) -> None:
    cfg = RetryConfig(breaker_min_calls=2, breaker_open_seconds=5.0)
    clock = FakeClock()
    a = RedisCircuitBreaker(cfg, redis_url, clock=clock)
    b = RedisCircuitBreaker(cfg, redis_url, clock=clock)
    a.record("chat", "m", "failure")
    assert b.record("chat", "m", "failure") == OPEN
    permit = a.acquire("chat", "m")
    assert not permit.allowed and permit.retry_in_seconds == pytest.approx(5.0, abs=1e-3)


def test_server_time_mode(redis_url: str) -> None:
    cfg = RetryConfig(breaker_min_calls=1, breaker_open_seconds=0.3)
    breaker = RedisCircuitBreaker(cfg, redis_url)  # no clock: Redis TIME decides
    assert breaker.record("chat", "m", "failure") == OPEN
    assert 0 < breaker.retry_in("chat", "m") <= 0.3
    time.sleep(0.35)
    assert breaker.acquire("chat", "m").probe
    budget = RedisRetryBudget(BUDGET, redis_url)
    budget.deposit("k")
    assert budget.balance("k") == pytest.approx(2.5)


def test_unreachable_redis_falls_back_to_memory() -> None:
    url = dead_url()
    clock = FakeClock()
    budget = RedisRetryBudget(BUDGET, url, clock=clock)
    breaker = RedisCircuitBreaker(RetryConfig(breaker_min_calls=1), url, clock=clock)
    started = time.monotonic()
    budget.deposit("k")
    assert budget.balance("k") == pytest.approx(2.5)
    assert breaker.record("chat", "m", "failure") == OPEN
    assert not breaker.acquire("chat", "m").allowed
    assert time.monotonic() - started < 2.0  # short timeouts, then no more attempts for a while


def test_redis_dying_mid_flight_never_fails_the_call(redis_server: RedisServer, redis_url: str) -> None:
    link = RedisLink(RedisConfig(redis_url, backoff_initial_seconds=0.0, backoff_max_seconds=0.0))  # no back-off
    cfg = RetryConfig(budget_ratio=0.0, budget_min_retries_per_second=0.1, budget_window_seconds=10.0,
                      breaker_min_calls=100)
    clock = FakeClock()
    ctl = RetryController(cfg, RedisRetryBudget(cfg, link, clock=clock),
                          RedisCircuitBreaker(cfg, link, clock=clock), clock=clock)
    assert run(ctl.start("k", "chat", "m"), status_error(500)) == [None, "budget_exhausted"]  # shared floor: 1
    redis_server.kill()
    # Memory fallback: its own floor of 1 retry, then exhausted; no exception reaches the caller.
    assert run(ctl.start("k", "chat", "m"), status_error(500)) == [None, "budget_exhausted"]
    redis_server.start()
    assert run(ctl.start("k", "chat", "m"), status_error(500)) == [None, "budget_exhausted"]  # fresh Redis


def test_from_config_shares_through_redis(redis_url: str) -> None:
    cfg = RetryConfig(redis_url=redis_url, redis_prefix="cfg", breaker_min_calls=1, max_attempts=3,
                      breaker_max_wait_seconds=0)
    one, two = RetryController.from_config(cfg), RetryController.from_config(cfg)
    assert isinstance(one.budget, RedisRetryBudget) and isinstance(one.breaker, RedisCircuitBreaker)
    assert run(one.start("k", "chat", "m"), status_error(500)) == ["circuit_open"]
    assert not two.breaker.acquire("chat", "m").allowed  # type: ignore[union-attr]
