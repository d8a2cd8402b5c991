"""Issues 10.5 and 12.6: one Redis policy for the four features that keep shared state in Redis.

For each user -- the limiter, the retry state (retry budget and circuit breaker), stream checkpoints and the cost
budget ledger -- against a stalled Redis (it accepts connections and never answers a byte), a dead one
(connection refused) and one that dies and comes back, through protected clients and the simulator:

* the calls complete, in about the time they take without Redis (one bounded timeout, not one per operation);
* every operation that did not use Redis is counted under its feature, and one WARNING is logged per outage;
* Redis is used again once the back-off after its return has expired.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
import redis

from middleware import Config, CostConfig, LimitConfig, RedisConfig, RetryConfig, StreamConfig, pipeline_of
from middleware.cost import parse_rules
from middleware.redisconn import link_for
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from tests.fixtures.redis_server import BlackHole, RedisServer, refused_url
from tests.fixtures.telemetry import TelemetryKit

FEATURES = (n.REDIS_FEATURE_LIMITER, n.REDIS_FEATURE_RETRY, n.REDIS_FEATURE_CHECKPOINT, n.REDIS_FEATURE_BUDGET)
CALLS = 12
TIMEOUT = RedisConfig().timeout_seconds
NO_PROBE = RedisConfig(backoff_initial_seconds=60.0, backoff_max_seconds=60.0)  # one try, then skipped throughout
QUICK = RedisConfig(backoff_initial_seconds=0.3, backoff_max_seconds=0.3)  # probed again within 0.3 s
FALLBACKS = "llm_middleware_redis_fallbacks_total"
DEFAULT = RedisConfig()


def feature_config(feature: str, url: str | None, policy: RedisConfig = DEFAULT) -> Config:
    """A config where only ``feature`` keeps its state in Redis at ``url`` (None: nowhere), under ``policy``."""
    retry = RetryConfig(base_delay=0.01, max_delay=0.02)
    if feature == n.REDIS_FEATURE_LIMITER:
        return Config(limits=LimitConfig(redis_url=url), retry=retry, redis=policy)
    if feature == n.REDIS_FEATURE_RETRY:
        return Config(retry=RetryConfig(base_delay=0.01, max_delay=0.02, redis_url=url), redis=policy)
    if feature == n.REDIS_FEATURE_BUDGET:
        return Config(cost=CostConfig(budgets=parse_rules("api_key/day=1000"), redis_url=url), retry=retry,
                      redis=policy)
    return Config(streaming=StreamConfig(checkpoint_redis_url=url, checkpoint_every_chunks=10), retry=retry,
                  redis=policy)


def request(feature: str, i: int) -> dict[str, Any]:
    """One call of the workload: streams for checkpoints; every fourth call fails once (a retry) for the others."""
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"call {i}"}]}
    if feature == n.REDIS_FEATURE_CHECKPOINT:
        return {**kwargs, "stream": True, "extra_headers": {"x-sim-output-tokens": "40"}}
    headers = {"x-sim-output-tokens": "5"}
    if i % 4 == 0:
        headers |= {"x-sim-fault": "status=500", "x-sim-fault-once": f"{feature}-{i}-{time.monotonic_ns()}"}
    return {**kwargs, "max_tokens": 20, "extra_headers": headers}


def run_sync(client: Any, feature: str, calls: int = CALLS) -> float:
    started = time.monotonic()
    for i in range(calls):
        result = client.chat.completions.create(**request(feature, i))
        if feature == n.REDIS_FEATURE_CHECKPOINT:
            assert sum(1 for _ in result) > 40
        else:
            assert result.choices
    return time.monotonic() - started


def middleware_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.startswith("middleware") and r.levelno >= logging.WARNING]


def baseline(simulator: Simulator, protect_with: Callable[..., Any], feature: str) -> float:
    plain = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-base"), feature_config(feature, None))
    run_sync(plain, feature, 2)  # warm up (encoders, connections)
    return run_sync(plain, feature)


@pytest.mark.parametrize("feature", FEATURES)
def test_a_stalled_redis_costs_one_timeout_and_every_call_goes_on(
    feature: str, simulator: Simulator, black_hole: BlackHole, telemetry: TelemetryKit,
    protect_with: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    base = baseline(simulator, protect_with, feature)
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-stall"),
                          feature_config(feature, black_hole.url, NO_PROBE))
    with caplog.at_level(logging.WARNING, logger="middleware"):
        took = run_sync(client, feature)
    assert took < base + 2 * TIMEOUT + 0.5, (took, base)  # one timeout, then Redis is skipped
    assert black_hole.accepted == 1  # one connection tried, no reconnection per operation
    assert telemetry.sample(FALLBACKS, llm_middleware_redis_feature=feature, llm_middleware_reason="timeout") == 1
    assert telemetry.sample(FALLBACKS, llm_middleware_redis_feature=feature,
                            llm_middleware_reason="backoff") >= CALLS - 1  # every later call answered locally
    assert telemetry.sample(FALLBACKS) == telemetry.sample(FALLBACKS, llm_middleware_redis_feature=feature)
    warnings = middleware_warnings(caplog)
    assert len(warnings) == 1 and "middleware.redisconn" in warnings[0] and feature in warnings[0], warnings
    if feature == n.REDIS_FEATURE_LIMITER:  # the feature's own signals, as before
        assert telemetry.sample("llm_middleware_limiter_fallbacks_total") == 1
    elif feature == n.REDIS_FEATURE_BUDGET:
        assert telemetry.sample("llm_middleware_budget_fallback_active") == 1
    elif feature == n.REDIS_FEATURE_CHECKPOINT:
        assert telemetry.sample("llm_middleware_telemetry_errors_total", component="checkpoint") >= CALLS


@pytest.mark.parametrize("feature", FEATURES)
def test_a_dead_redis_costs_one_refused_connection(
    feature: str, simulator: Simulator, telemetry: TelemetryKit, protect_with: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = baseline(simulator, protect_with, feature)
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-dead"),
                          feature_config(feature, refused_url(), NO_PROBE))
    with caplog.at_level(logging.WARNING, logger="middleware"):
        took = run_sync(client, feature)
    assert took < base + 0.5, (took, base)
    assert telemetry.sample(FALLBACKS, llm_middleware_redis_feature=feature, llm_middleware_reason="connection") == 1
    assert telemetry.sample(FALLBACKS, llm_middleware_redis_feature=feature,
                            llm_middleware_reason="backoff") >= CALLS - 1
    assert len(middleware_warnings(caplog)) == 1


def redis_used(feature: str, client: Any, url: str, telemetry: TelemetryKit) -> bool:
    """The feature's own evidence that it keeps its state in Redis (a fresh, restarted Redis holds it again)."""
    pipeline = pipeline_of(client)
    keys = [k.decode() for k in redis.Redis.from_url(url).keys("*")]
    if feature == n.REDIS_FEATURE_LIMITER:
        return not pipeline.limiter.degraded and any(":limiter:" in k for k in keys)
    if feature == n.REDIS_FEATURE_RETRY:
        return any(":retry_budget:" in k for k in keys) and any(":breaker:" in k for k in keys)
    if feature == n.REDIS_FEATURE_BUDGET:
        ledger = pipeline.cost.ledger
        return ledger is not None and not ledger.degraded and any(":budget}" in k for k in keys)
    return telemetry.sample("llm_middleware_checkpoints_written_total") > 0


@pytest.mark.parametrize("feature", FEATURES)
def test_redis_coming_back_is_used_again_after_the_backoff(
    feature: str, simulator: Simulator, redis_server: RedisServer, redis_url: str, telemetry: TelemetryKit,
    protect_with: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-back"),
                          feature_config(feature, redis_url, QUICK))
    run_sync(client, feature, 4)
    assert redis_used(feature, client, redis_url, telemetry)
    with caplog.at_level(logging.WARNING, logger="middleware"):
        redis_server.kill()
        try:
            run_sync(client, feature, 4)  # answered locally
            assert telemetry.sample(FALLBACKS, llm_middleware_redis_feature=feature) >= 4
        finally:
            redis_server.start()  # empty: whatever is in it afterwards was written after the outage
        time.sleep(0.35)
        written = telemetry.sample("llm_middleware_checkpoints_written_total")
        run_sync(client, feature, 4)
    if feature == n.REDIS_FEATURE_CHECKPOINT:
        assert telemetry.sample("llm_middleware_checkpoints_written_total") > written
    assert redis_used(feature, client, redis_url, telemetry)
    assert link_for(QUICK.with_url(redis_url)).healthy
    warnings = middleware_warnings(caplog)
    assert [("unavailable" in w, "available again" in w) for w in warnings] == [(True, False), (False, True)], \
        warnings


def test_all_four_on_one_stalled_redis_a_long_stream_takes_its_usual_time(
    simulator: Simulator, black_hole: BlackHole, telemetry: TelemetryKit, protect_with: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MIDDLEWARE_REDIS_URL and MIDDLEWARE_CHECKPOINT_REDIS_URL on the same stalled Redis: one link, one timeout."""
    kwargs = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "A long answer, please."}],
              "stream": True, "extra_headers": {"x-sim-output-tokens": "300"}}
    budgets = CostConfig(budgets=parse_rules("api_key/day=1000"))

    def one(config: Config) -> tuple[float, int]:
        client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-all"), config)
        started = time.monotonic()
        chunks = sum(1 for _ in client.chat.completions.create(**kwargs))
        return time.monotonic() - started, chunks

    one(Config(cost=budgets))  # warm up
    base, _ = one(Config(cost=budgets))
    stalled = Config(redis=RedisConfig(black_hole.url), cost=budgets,
                     streaming=StreamConfig(checkpoint_redis_url=black_hole.url, checkpoint_every_chunks=10))
    with caplog.at_level(logging.WARNING, logger="middleware"):
        took, chunks = one(stalled)
    assert chunks == 302
    assert took < base + 2 * TIMEOUT + 0.5, (took, base)  # before: a timeout per checkpoint (30 of them)
    assert black_hole.accepted == 1
    assert {f for f in FEATURES if telemetry.sample(FALLBACKS, llm_middleware_redis_feature=f)} == set(FEATURES)
    assert len(middleware_warnings(caplog)) == 1
