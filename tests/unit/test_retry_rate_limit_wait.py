"""A rate-limit 429 is a wait bounded by the call's wait budget, not an attempt nor a retry-budget withdrawal."""

from __future__ import annotations

import random

import openai
import pytest

from middleware.errors import ThrottleTimeout
from middleware.retry import RateLimitWaitExceeded, RetryBudget, RetryConfig, RetryController
from tests.unit.test_retry_breaker import FakeClock
from tests.unit.test_retry_classify import QUOTA, RPM, TOO_LARGE, TPM, status_error

LIMIT_HEADERS = {"x-ratelimit-limit-tokens": "10000", "retry-after-ms": "2000"}


def controller(clock: FakeClock, **kwargs: object) -> RetryController:
    cfg = RetryConfig(**{"breaker_enabled": False, **kwargs})  # type: ignore[arg-type]
    return RetryController(cfg, RetryBudget(cfg, clock), clock=clock, rng=random.Random(3))


def test_429s_are_retried_past_max_attempts_while_the_budget_lasts_and_cost_no_retry_budget() -> None:
    clock = FakeClock()
    ctl = controller(clock, max_attempts=2)
    state = ctl.start("k", "chat", "m", wait_budget=30.0)
    ctl.start("control", "chat", "m")  # the same deposit, no retries
    assert ctl.budget is not None
    decisions = []
    for _ in range(14):  # 14 x 2 s of server-directed waits: 28 s, inside the 30 s budget
        state.before_attempt()
        decision = state.on_failure(status_error(429, TPM, LIMIT_HEADERS))
        decisions.append(decision)
        clock.advance(decision.delay_seconds)
    assert all(d.retry for d in decisions)  # max_attempts=2 would have stopped after one retry
    assert ctl.budget.balance("k") == pytest.approx(ctl.budget.balance("control"))  # no retry-budget withdrawal
    assert state.capacity_waited == pytest.approx(sum(d.delay_seconds for d in decisions))
    state.before_attempt()
    state.on_success()
    assert [a.reason for a in state.history] == ["rate_limit"] * 14 + ["ok"]


def test_past_the_budget_the_error_says_how_long_on_what_and_under_which_limit() -> None:
    clock = FakeClock()
    state = controller(clock).start("k", "chat", "gpt-x", wait_budget=5.0)
    state.admitted(1.5)  # the limiter already held the call 1.5 s
    reasons = []
    while True:
        state.before_attempt()
        last = status_error(429, TPM, LIMIT_HEADERS)
        decision = state.on_failure(last)
        reasons.append(decision.stop_reason)
        if not decision.retry:
            break
        clock.advance(decision.delay_seconds)
    # 1.5 s admission + one 2 s wait fit in 5 s; a second 2 s wait would not
    assert reasons == [None, "wait_budget"]
    error = decision.error
    assert isinstance(error, RateLimitWaitExceeded) and isinstance(error, ThrottleTimeout)
    assert error.__cause__ is last
    assert error.resource == "tokens" and error.limit == 10000 and error.model == "gpt-x"
    assert 3.5 <= error.waited_seconds <= 5.0 and error.needed_seconds >= 2.0 and error.max_wait_seconds == 5.0
    text = str(error)
    assert "rate limited on tokens (limit 10000)" in text and "max_wait_seconds=5" in text
    assert "after waiting 3.5s" in text


def test_limit_read_from_the_message_when_no_header_carries_it() -> None:
    state = controller(FakeClock()).start("k", "chat", "m", wait_budget=0.1)
    state.before_attempt()
    decision = state.on_failure(status_error(429, RPM, {"retry-after": "1"}))
    assert isinstance(decision.error, RateLimitWaitExceeded)
    assert decision.error.resource == "requests" and decision.error.limit == 3  # "Limit 3" in OpenAI's message


def test_a_limiter_refusal_after_429s_becomes_the_clear_error() -> None:
    clock = FakeClock()
    state = controller(clock).start("k", "chat", "m", wait_budget=10.0)
    refusal = ThrottleTimeout("needs 30s", needed_seconds=30.0, max_wait_seconds=10.0, reason="cooldown")
    assert state.throttle_error(refusal) is refusal  # no 429 yet: the limiter's own error
    state.before_attempt()
    first = status_error(429, TPM, LIMIT_HEADERS)
    assert state.on_failure(first).retry
    error = state.throttle_error(refusal)
    assert isinstance(error, RateLimitWaitExceeded) and error.__cause__ is first and error.needed_seconds == 30.0


@pytest.mark.parametrize("exc", [status_error(429, QUOTA), status_error(429, TOO_LARGE)])
def test_quota_and_too_large_stay_terminal(exc: openai.APIStatusError) -> None:
    state = controller(FakeClock()).start("k", "chat", "m", wait_budget=1000.0)
    state.before_attempt()
    assert state.on_failure(exc).stop_reason == "terminal"


def test_an_explicit_per_class_cap_still_caps_rate_limits() -> None:
    clock = FakeClock()
    state = controller(clock, per_class={"rate_limit": 2}).start("k", "chat", "m", wait_budget=1000.0)
    reasons = []
    for _ in range(4):
        state.before_attempt()
        decision = state.on_failure(status_error(429, TPM, LIMIT_HEADERS))
        reasons.append(decision.stop_reason)
        if not decision.retry:
            break
    assert reasons == [None, None, "max_attempts"]


def test_429_retries_do_not_use_up_the_attempts_of_server_errors() -> None:
    clock = FakeClock()
    state = controller(clock, max_attempts=3).start("k", "chat", "m", wait_budget=1000.0)
    for exc in [status_error(429, TPM, LIMIT_HEADERS)] * 5 + [status_error(503)] * 2:
        state.before_attempt()
        assert state.on_failure(exc).retry
    state.before_attempt()
    assert state.on_failure(status_error(503)).stop_reason == "max_attempts"  # the third 5xx: 3 attempts spent
