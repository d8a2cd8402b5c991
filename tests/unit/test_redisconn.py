"""The one Redis policy (``middleware.redisconn``) against real sockets: a redis-server, a stalled one, a dead one.

A link is one client and one health state per URL and policy: an operation costs at most the timeouts, a failure
opens a back-off during which every feature on that URL answers locally at once (counted), one caller probes when
it expires, one WARNING is logged per outage and one when Redis is back, and the async forms never hold the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from middleware import ConfigError, RedisUnavailable
from middleware.redisconn import RedisConfig, RedisLink, RedisSkipped, detach, handle_for, link_for
from middleware.telemetry import names as n
from tests.eventloop import with_ticker
from tests.fixtures.redis_server import BlackHole, RedisServer, refused_url


class Events:
    def __init__(self) -> None:
        self.fallbacks: list[tuple[str, str]] = []

    def redis_fallback(self, feature: str, reason: str) -> None:
        self.fallbacks.append((feature, reason))


def ping(client: Any) -> Any:
    return client.ping()


def redis_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "middleware.redisconn" and r.levelno >= logging.WARNING]


@given(initial=st.floats(0.0, 100.0), extra=st.floats(0.0, 1000.0), failures=st.integers(-2, 10_000),
       draw=st.floats(0.0, 1.0, exclude_max=True))
def test_the_backoff_doubles_to_its_cap_and_its_jitter_keeps_at_least_half(
        initial: float, extra: float, failures: int, draw: float) -> None:
    policy = RedisConfig(backoff_initial_seconds=initial, backoff_max_seconds=min(3600.0, initial + extra))
    delay = policy.backoff(failures, draw)
    if failures <= 0 or initial == 0:
        assert delay == 0.0
        return
    ceiling = min(policy.backoff_max_seconds, initial * 2.0 ** min(failures - 1, 60))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= policy.backoff_max_seconds
    assert policy.backoff(failures, draw) <= policy.backoff(failures + 1, draw) or ceiling == policy.backoff_max_seconds


def test_one_link_per_url_and_policy_and_the_features_share_its_health() -> None:
    url = refused_url()
    link = link_for(RedisConfig(url))
    assert link_for(RedisConfig(url)) is link  # every pipeline and feature of the process: one client, one pool
    assert link_for(RedisConfig(url, timeout_seconds=1.0)) is not link  # another policy: another link
    limiter, retry = link.feature(n.REDIS_FEATURE_LIMITER), link.feature(n.REDIS_FEATURE_RETRY)
    with pytest.raises(RedisSkipped) as first:
        limiter.run(ping)
    assert first.value.reason == n.REDIS_REASON_CONNECTION
    before = link.stats.operations
    with pytest.raises(RedisSkipped) as second:
        retry.run(ping)  # the limiter's failure is the retry state's back-off too: not even tried
    assert second.value.reason == n.REDIS_REASON_BACKOFF and link.stats.operations == before
    assert handle_for(url, n.REDIS_FEATURE_BUDGET).link is link


def test_a_dead_redis_costs_one_fast_failure_then_nothing_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    events = Events()
    handle = RedisLink(RedisConfig(refused_url())).feature(n.REDIS_FEATURE_BUDGET, events)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="middleware"):
        for _ in range(200):
            with pytest.raises(RedisSkipped):
                handle.run(ping)
    assert time.monotonic() - started < 0.5
    assert handle.link.stats.operations == 1 and handle.link.stats.skipped == 199
    assert events.fallbacks == [(n.REDIS_FEATURE_BUDGET, n.REDIS_REASON_CONNECTION)] + [
        (n.REDIS_FEATURE_BUDGET, n.REDIS_REASON_BACKOFF)] * 199
    warnings = redis_warnings(caplog)
    assert len(warnings) == 1 and "unavailable" in warnings[0] and "budget" in warnings[0]


def test_a_stalled_redis_costs_one_timeout_per_backoff_and_one_probe_at_a_time(black_hole: BlackHole) -> None:
    policy = RedisConfig(black_hole.url, connect_timeout_seconds=0.2, timeout_seconds=0.2,
                         backoff_initial_seconds=0.3, backoff_max_seconds=0.3)
    link = RedisLink(policy, rng=lambda: 0.999)  # back-off just under 0.3 s
    handle = link.feature(n.REDIS_FEATURE_RETRY)
    started = time.monotonic()
    with pytest.raises(RedisSkipped) as first:
        handle.run(ping)
    assert first.value.reason == n.REDIS_REASON_TIMEOUT
    assert 0.15 < time.monotonic() - started < 0.6
    time.sleep(0.35)  # the back-off is over: the next caller probes, the others keep skipping meanwhile
    reasons: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            handle.run(ping)
        except RedisSkipped as exc:
            with lock:
                reasons.append(exc.reason)

    threads = [threading.Thread(target=call) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 0.6  # one timeout, not eight in a row
    assert sorted(reasons) == [n.REDIS_REASON_BACKOFF] * 7 + [n.REDIS_REASON_TIMEOUT]
    assert black_hole.accepted == 2  # the first try and the one probe


def test_concurrent_failures_open_one_backoff_not_one_per_caller(black_hole: BlackHole) -> None:
    link = RedisLink(RedisConfig(black_hole.url, timeout_seconds=0.2, backoff_initial_seconds=1.0,
                                 backoff_max_seconds=8.0))
    handle = link.feature(n.REDIS_FEATURE_LIMITER)
    link.client.connection_pool.max_connections = 100
    skipped: list[str] = []

    def call() -> None:
        try:
            handle.run(ping)
        except RedisSkipped as exc:
            skipped.append(exc.reason)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert skipped == [n.REDIS_REASON_TIMEOUT] * 6
    assert link.stats.outages == 1 and link.stats.failures == 6
    assert link._failures == 1  # the back-off of one failure (about 1 s), not of six (8 s)


def test_redis_coming_back_is_used_again_after_the_backoff(redis_server: RedisServer, redis_url: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    link = RedisLink(RedisConfig(redis_url, backoff_initial_seconds=0.3, backoff_max_seconds=0.3))
    handle = link.feature(n.REDIS_FEATURE_CHECKPOINT)
    assert handle.run(lambda c: c.set("k", "1")) is True
    with caplog.at_level(logging.WARNING, logger="middleware"):
        redis_server.kill()
        try:
            with pytest.raises(RedisSkipped):
                handle.run(ping)
            assert not link.healthy and not link.ready()
        finally:
            redis_server.start()
        with pytest.raises(RedisSkipped) as skipped:
            handle.run(ping)  # Redis is back, but the back-off still runs: not tried yet
        assert skipped.value.reason == n.REDIS_REASON_BACKOFF
        time.sleep(0.35)
        assert link.ready()
        assert handle.run(lambda c: c.set("k", "2")) is True
        assert link.healthy and handle.run(lambda c: c.get("k")) == b"2"
    warnings = redis_warnings(caplog)
    assert len(warnings) == 2 and "unavailable" in warnings[0] and "available again" in warnings[1]


def test_fallback_fail_refuses_admission_decisions_only(black_hole: BlackHole) -> None:
    link = RedisLink(RedisConfig(refused_url(), fallback="fail"))
    handle = link.feature(n.REDIS_FEATURE_LIMITER)
    with pytest.raises(RedisUnavailable) as refused:
        handle.run(ping, admission=True)
    assert refused.value.feature == "limiter" and refused.value.reason == n.REDIS_REASON_CONNECTION
    with pytest.raises(RedisUnavailable) as skipped:
        handle.run(ping, admission=True)
    assert skipped.value.reason == n.REDIS_REASON_BACKOFF
    with pytest.raises(RedisSkipped):
        handle.run(ping)  # a write after the fact falls back even so


def test_a_bug_in_an_operation_is_raised_and_says_nothing_about_redis(redis_url: str) -> None:
    link = RedisLink(RedisConfig(redis_url))
    with pytest.raises(ZeroDivisionError):
        link.run("limiter", lambda c: 1 / 0)
    assert link.healthy and link.stats.failures == 0


def test_arun_keeps_the_event_loop_ticking_while_redis_stalls(black_hole: BlackHole) -> None:
    handle = RedisLink(RedisConfig(black_hole.url, timeout_seconds=0.3)).feature(n.REDIS_FEATURE_RETRY)

    async def work() -> list[Any]:
        return await asyncio.gather(*(handle.arun(ping) for _ in range(4)), return_exceptions=True)

    results, pause = asyncio.run(with_ticker(work()))
    assert all(isinstance(r, RedisSkipped) for r in results)
    assert pause < 0.1, pause  # the 0.3 s timeouts were waited in worker threads
    assert handle.link.stats.on_event_loop == 0


def test_blocking_run_on_the_loop_is_what_arun_avoids(black_hole: BlackHole) -> None:
    """The measurement the tests above rely on: the same stalled call, blocking, holds the loop for its timeout."""
    handle = RedisLink(RedisConfig(black_hole.url, timeout_seconds=0.3)).feature(n.REDIS_FEATURE_RETRY)

    async def blocking() -> None:
        with pytest.raises(RedisSkipped):
            handle.run(ping)

    _, pause = asyncio.run(with_ticker(blocking()))
    assert pause >= 0.25 and handle.link.stats.on_event_loop == 1


def test_detach_runs_inline_off_the_loop_and_in_a_worker_on_it() -> None:
    threads: list[int] = []
    detach(lambda: threads.append(threading.get_ident()))
    assert threads == [threading.get_ident()]

    async def main() -> int:
        detach(lambda: (time.sleep(0.2), threads.append(threading.get_ident())))
        return threading.get_ident()

    loop_thread = asyncio.run(main())  # asyncio.run waits for the default executor: the write is not lost
    assert len(threads) == 2 and threads[1] != loop_thread


def test_the_policy_is_validated_like_every_config_section() -> None:
    with pytest.raises(ConfigError, match=r"RedisConfig.timeout_seconds=0 is not allowed"):
        RedisConfig(timeout_seconds=0)
    with pytest.raises(ConfigError, match="backoff_max_seconds"):
        RedisConfig(backoff_initial_seconds=3, backoff_max_seconds=2)
    with pytest.raises(ConfigError) as info:
        RedisConfig(url="redis://:hunter2@cache:99999/0")
    assert "hunter2" not in str(info.value)
