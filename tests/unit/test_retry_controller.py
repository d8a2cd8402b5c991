"""RetryController decisions: attempts, per-class limits, retry-after, deadline, budget, breaker, history."""

from __future__ import annotations

import random

import openai
import pytest

from middleware.errors import CircuitOpenError, ConfigError, RetryAfterTooLong
from middleware.retry import CallRetryState, RetryBudget, RetryConfig, RetryController
from tests.http import http as httpx2
from tests.unit.test_retry_breaker import FakeClock
from tests.unit.test_retry_classify import QUOTA, RPM, TPM, err, request, status_error

NO_GUARDS = {"budget_enabled": False, "breaker_enabled": False}


class Events:
    def __init__(self) -> None:
        self.exhausted: list[str] = []
        self.transitions: list[tuple[str, str, str]] = []

    def retry_budget_exhausted(self, model: str) -> None:
        self.exhausted.append(model)

    def breaker_transition(self, endpoint: str, model: str, state: str) -> None:
        self.transitions.append((endpoint, model, state))


def controller(clock: FakeClock | None = None, events: Events | None = None, **kwargs: object) -> RetryController:
    cfg = RetryConfig(**{**NO_GUARDS, **kwargs})  # type: ignore[arg-type]
    return RetryController(cfg, clock=clock or FakeClock(), rng=random.Random(7), events=events)


def run(state: CallRetryState, exc: BaseException, clock: FakeClock | None = None) -> list[str | None]:
    """Fail every attempt with ``exc`` until the decision is to stop; returns every stop_reason seen."""
    reasons: list[str | None] = []
    while True:
        while (wait := state.before_attempt()) > 0:  # an open circuit: wait on the fake clock
            assert clock is not None, f"unexpected circuit wait of {wait}s"
            clock.advance(wait)
        decision = state.on_failure(exc)
        reasons.append(decision.stop_reason)
        if not decision.retry:
            return reasons
        if clock is not None:
            clock.advance(decision.delay_seconds)


def test_retries_then_succeeds_with_history() -> None:
    state = controller(jitter="none").start("k", "chat", "gpt-4o")
    state.before_attempt()
    first = state.on_failure(status_error(503, err("overloaded"), {"x-request-id": "req_1"}))
    assert first.retry and first.delay_seconds == 0.5 and first.stop_reason is None and first.error is None
    state.before_attempt()
    assert state.on_failure(openai.APITimeoutError(request())).delay_seconds == 1.0
    state.before_attempt()
    state.on_success()
    assert [(a.attempt, a.outcome, a.reason, a.delay_seconds) for a in state.history] == [
        (1, "retryable", "server_error", 0.5), (2, "retryable", "timeout", 1.0), (3, "success", "ok", 0.0)]
    assert state.history[0].status == 503 and state.history[0].request_id == "req_1"
    assert state.history[0].error_type == "InternalServerError"


def test_max_attempts() -> None:
    state = controller(max_attempts=4).start("k", "chat", "m")
    assert run(state, status_error(500)) == [None, None, None, "max_attempts"]
    assert len(state.history) == 4


def test_per_class_limits() -> None:
    ctl = controller(max_attempts=2, per_class={"rate_limit": 6, "timeout": 0})
    assert len(run(ctl.start("k", "chat", "m"), status_error(429, RPM))) == 7
    assert run(ctl.start("k", "chat", "m"), openai.APITimeoutError(request())) == ["max_attempts"]
    assert len(run(ctl.start("k", "chat", "m"), status_error(502))) == 2  # max_attempts for the rest


def test_per_class_mixed_failures_share_the_hard_cap() -> None:
    state = controller(max_attempts=3, per_class={"rate_limit": 4, "server_error": 4}).start("k", "chat", "m")
    failures = [status_error(429, RPM), status_error(500)] * 5
    decisions = []
    for exc in failures:
        state.before_attempt()
        decisions.append(state.on_failure(exc))
        if not decisions[-1].retry:
            break
    assert sum(d.retry for d in decisions) == 4 and decisions[-1].stop_reason == "max_attempts"


@pytest.mark.parametrize("exc", [
    status_error(429, QUOTA),
    status_error(429, QUOTA, {"x-should-retry": "true", "retry-after": "1"}),
    status_error(400, err("You exceeded your current quota", "insufficient_quota", "insufficient_quota")),
])
def test_insufficient_quota_is_never_retried(exc: openai.APIStatusError) -> None:
    generous = controller(max_attempts=50, per_class={"rate_limit": 100, "bad_request": 10})
    state = generous.start("k", "chat", "m")
    assert run(state, exc) == ["terminal"]
    assert state.history[0].outcome == "terminal" and state.history[0].reason == "insufficient_quota"
    with pytest.raises(ConfigError):
        RetryConfig(per_class={"insufficient_quota": 3})


def test_terminal_classes_and_opt_in() -> None:
    assert run(controller().start("k", "chat", "m"), status_error(400, err("bad"))) == ["terminal"]
    opted = controller(per_class={"bad_request": 2}).start("k", "chat", "m")
    assert run(opted, status_error(400, err("bad"))) == [None, None, "max_attempts"]
    assert run(controller(per_class={"rate_limit": 5}).start("k", "chat", "m"),
               status_error(429, err("Request too large for gpt-4o", "tokens", "rate_limit_exceeded"))) == ["terminal"]


def test_retry_after_wins_over_backoff() -> None:
    state = controller(base_delay=0.01, max_delay=0.02).start("k", "chat", "m")
    state.before_attempt()
    decision = state.on_failure(status_error(429, TPM, {"retry-after-ms": "1500", "retry-after": "9"}))
    assert decision.retry and 1.5 <= decision.delay_seconds <= 1.5 * 1.05
    state.before_attempt()
    decision = state.on_failure(status_error(503, None, {"retry-after": "3"}))
    assert 3.0 <= decision.delay_seconds <= 3.15


def test_retry_after_above_the_cap_fails_with_our_error() -> None:
    state = controller(max_retry_after=60.0).start("k", "chat", "m")
    state.before_attempt()
    original = status_error(429, RPM, {"retry-after": "120"})
    decision = state.on_failure(original)
    assert not decision.retry and decision.stop_reason == "retry_after_too_long"
    assert isinstance(decision.error, RetryAfterTooLong)
    assert decision.error.retry_after_seconds == 120.0 and decision.error.max_retry_after_seconds == 60.0
    assert decision.error.__cause__ is original
    assert "120" in str(decision.error)


def test_deadline() -> None:
    clock = FakeClock()
    state = controller(clock, jitter="none", deadline_seconds=2.0).start("k", "chat", "m")
    reasons = run(state, status_error(500), clock)  # delays 0.5, 1.0 fit (1.5 s); 2.0 more would not
    assert reasons == [None, None, "deadline"]
    assert clock.now - 1_700_000_000.0 == pytest.approx(1.5)


def test_deadline_counts_time_spent_in_attempts() -> None:
    clock = FakeClock()
    state = controller(clock, jitter="none", deadline_seconds=2.0).start("k", "chat", "m")
    state.before_attempt()
    clock.advance(1.8)  # a slow attempt
    assert state.on_failure(openai.APITimeoutError(request())).stop_reason == "deadline"


def test_budget_stops_a_storm() -> None:
    events = Events()
    clock = FakeClock()
    cfg = RetryConfig(max_attempts=4, breaker_enabled=False, budget_ratio=0.2, budget_min_retries_per_second=1.0,
                      budget_window_seconds=10.0)
    ctl = RetryController(cfg, RetryBudget(cfg, clock), clock=clock, rng=random.Random(1), events=events)
    requests, retries = 200, 0
    for _ in range(requests):
        state = ctl.start("key", "chat", "m")
        reasons = run(state, status_error(503))
        retries += len(reasons) - 1
    assert retries <= 0.2 * requests + 1.0 * 10.0
    assert retries >= 0.2 * requests  # the budget does allow its share
    assert events.exhausted and set(events.exhausted) == {"m"}


def test_budget_is_per_key() -> None:
    clock = FakeClock()
    cfg = RetryConfig(breaker_enabled=False, budget_ratio=0.0, budget_min_retries_per_second=0.1,
                      budget_window_seconds=10.0)
    ctl = RetryController(cfg, clock=clock)
    assert run(ctl.start("a", "chat", "m"), status_error(500)) == [None, "budget_exhausted"]
    assert run(ctl.start("b", "chat", "m"), status_error(500)) == [None, "budget_exhausted"]
    clock.advance(10.0)
    assert run(ctl.start("a", "chat", "m"), status_error(500))[0] is None  # the window refilled the floor


def test_breaker_opens_and_fails_fast() -> None:
    events = Events()
    clock = FakeClock()
    ctl = controller(clock, events, breaker_enabled=True, breaker_min_calls=3, breaker_open_seconds=30.0,
                     max_attempts=10, jitter="none", breaker_max_wait_seconds=0.0)
    state = ctl.start("k", "chat", "m")
    assert run(state, status_error(502), clock) == [None, None, "circuit_open"]
    assert events.transitions == [("chat", "m", "open")]
    with pytest.raises(CircuitOpenError) as caught:
        ctl.start("k", "chat", "m").before_attempt()
    assert caught.value.endpoint == "chat" and caught.value.model == "m"
    assert 0 < caught.value.retry_in_seconds <= 30.0
    clock.advance(30.0)
    probe = ctl.start("k", "chat", "m")
    probe.before_attempt()
    probe.on_success()
    assert events.transitions[1:] == [("chat", "m", "half_open"), ("chat", "m", "closed")]


def test_circuit_open_decision_carries_error() -> None:
    ctl = controller(breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=30.0, breaker_max_wait_seconds=0)
    state = ctl.start("k", "chat", "m")
    state.before_attempt()
    original = status_error(500)
    decision = state.on_failure(original)
    assert decision.stop_reason == "circuit_open" and isinstance(decision.error, CircuitOpenError)
    assert decision.error.__cause__ is original


def test_client_errors_and_429s_do_not_trip_the_breaker() -> None:
    ctl = controller(breaker_enabled=True, breaker_min_calls=2, max_attempts=1)
    for exc in [status_error(429, RPM), status_error(400), status_error(404)] * 10:
        run(ctl.start("k", "chat", "m"), exc)
    ctl.start("k", "chat", "m").before_attempt()  # still closed


def test_events_that_raise_never_break_the_call() -> None:
    class Broken(Events):
        def breaker_transition(self, endpoint: str, model: str, state: str) -> None:
            raise RuntimeError("exporter down")

    ctl = controller(None, Broken(), breaker_enabled=True, breaker_min_calls=1, breaker_max_wait_seconds=0)
    decision = run(ctl.start("k", "chat", "m"), status_error(500))
    assert decision == ["circuit_open"]


def test_from_config_builds_memory_guards() -> None:
    ctl = RetryController.from_config(RetryConfig())
    assert type(ctl.budget) is RetryBudget and ctl.breaker is not None
    assert RetryController.from_config(RetryConfig(**NO_GUARDS)).budget is None  # type: ignore[arg-type]


def test_cancellation_is_terminal() -> None:
    state = controller(per_class={"timeout": 5}).start("k", "chat", "m")
    state.before_attempt()
    import asyncio

    assert state.on_failure(asyncio.CancelledError()).stop_reason == "terminal"
    assert state.on_failure(httpx2.ConnectError("refused")).retry


def test_on_cancel_frees_the_half_open_probe_slot() -> None:
    clock = FakeClock()
    ctl = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0, max_attempts=1,
                     breaker_max_wait_seconds=0)
    run(ctl.start("k", "chat", "m"), status_error(500))  # opens
    clock.advance(5.0)
    probe = ctl.start("k", "chat", "m")
    probe.before_attempt()  # half-open: the one probe slot is taken
    with pytest.raises(CircuitOpenError):
        ctl.start("k", "chat", "m").before_attempt()
    probe.on_cancel()
    probe.on_cancel()  # idempotent
    assert [(a.attempt, a.outcome, a.reason) for a in probe.history] == [(1, "terminal", "cancelled")]
    again = ctl.start("k", "chat", "m")
    again.before_attempt()  # the slot is free at once, not after the probe's expiry
    again.on_success()
    assert ctl.breaker is not None and ctl.breaker.state("chat", "m") == "closed"


def test_on_cancel_unsent_attempt_is_forgotten_and_noop_between_attempts() -> None:
    state = controller(jitter="none").start("k", "chat", "m")
    state.before_attempt()
    assert state.on_failure(status_error(500)).retry
    state.on_cancel()  # during the backoff sleep: nothing held, nothing recorded
    assert len(state.history) == 1
    state.before_attempt()
    state.on_cancel(sent=False)  # e.g. the limiter refused capacity: the attempt never went out
    assert state.attempt == 1 and len(state.history) == 1


# ---------------------------------------------------------------- waiting for an open circuit (bounded)

def open_circuit(ctl: RetryController, clock: FakeClock) -> None:
    """One call whose only attempt fails: with breaker_min_calls=1 the circuit opens."""
    state = ctl.start("k", "chat", "m")
    assert state.before_attempt() == 0.0
    state.on_failure(status_error(500))
    assert ctl.breaker is not None and ctl.breaker.state("chat", "m") == "open"


def test_open_circuit_makes_the_call_wait_for_the_probe_window_then_succeed() -> None:
    clock = FakeClock()
    ctl = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0, max_attempts=1)
    open_circuit(ctl, clock)
    clock.advance(1.0)
    state = ctl.start("k", "chat", "m")
    wait = state.before_attempt()
    assert 4.0 <= wait <= 4.0 + 0.25  # until the window opens, plus <= half a poll of jitter
    assert state.attempt == 0 and not state.history  # nothing sent, nothing counted
    clock.advance(wait)
    assert state.before_attempt() == 0.0  # the probe
    other = ctl.start("k", "chat", "m")
    polls = [other.before_attempt() for _ in range(3)]  # the probe is in flight: poll, send nothing
    assert all(0.25 <= p <= 0.5 for p in polls) and other.attempt == 0
    clock.advance(polls[0])
    state.on_success()  # the probe succeeded: closed
    assert other.before_attempt() == 0.0 and other.attempt == 1
    other.on_success()
    assert state.circuit_waited == pytest.approx(wait)
    assert [a.attempt for a in state.history] == [1]


def test_retry_into_an_open_circuit_waits_instead_of_failing() -> None:
    clock = FakeClock()
    ctl = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0, jitter="none")
    state = ctl.start("k", "chat", "m")
    state.before_attempt()
    decision = state.on_failure(status_error(500))  # opens the circuit; 5 s open < 30 s bound: retry
    assert decision.retry and decision.delay_seconds == 0.5
    clock.advance(decision.delay_seconds)
    wait = state.before_attempt()
    assert 4.5 <= wait <= 4.75
    clock.advance(wait)
    assert state.before_attempt() == 0.0 and state.attempt == 2
    state.on_success()
    assert [(a.attempt, a.outcome) for a in state.history] == [(1, "retryable"), (2, "success")]


def test_wait_beyond_the_bound_fails_at_once_with_circuit_open() -> None:
    clock = FakeClock()
    ctl = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0, max_attempts=1,
                     breaker_max_wait_seconds=2.0)
    open_circuit(ctl, clock)
    with pytest.raises(CircuitOpenError) as caught:
        ctl.start("k", "chat", "m").before_attempt()  # 5 s to the window > 2 s: no point in waiting
    assert caught.value.retry_in_seconds == pytest.approx(5.0)
    # The deadline bounds the wait too.
    deadline = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0,
                          max_attempts=1, deadline_seconds=3.0)
    open_circuit(deadline, clock)
    with pytest.raises(CircuitOpenError):
        deadline.start("k", "chat", "m").before_attempt()


def test_polling_a_busy_half_open_circuit_stops_at_the_bound() -> None:
    clock = FakeClock()
    ctl = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0, max_attempts=1,
                     breaker_max_wait_seconds=2.0)
    open_circuit(ctl, clock)
    clock.advance(5.0)
    assert ctl.start("k", "chat", "m").before_attempt() == 0.0  # a probe that never reports back (in time)
    waiter = ctl.start("k", "chat", "m")
    waited = 0.0
    with pytest.raises(CircuitOpenError):
        for _ in range(100):
            wait = waiter.before_attempt()
            assert wait > 0
            clock.advance(wait)
            waited += wait
    assert waited == pytest.approx(2.0) and waiter.attempt == 0


def test_max_wait_zero_fails_fast() -> None:
    clock = FakeClock()
    ctl = controller(clock, breaker_enabled=True, breaker_min_calls=1, breaker_open_seconds=5.0, max_attempts=1,
                     breaker_max_wait_seconds=0)
    open_circuit(ctl, clock)
    with pytest.raises(CircuitOpenError):
        ctl.start("k", "chat", "m").before_attempt()
    clock.advance(5.0)
    assert ctl.start("k", "chat", "m").before_attempt() == 0.0  # the probe
    with pytest.raises(CircuitOpenError):
        ctl.start("k", "chat", "m").before_attempt()  # half-open, slot taken: no polling either
    with pytest.raises(ConfigError):
        RetryConfig(breaker_max_wait_seconds=-1.0)


# ---------------------------------------------------------------- budget sizing (the defaults)

def background_errors(cfg: RetryConfig, rate: float, requests: int, per_second: float) -> tuple[int, int]:
    """``requests`` calls at ``per_second``, each attempt failing with probability ``rate``: (failed calls, retries)."""
    clock = FakeClock()
    rng = random.Random(11)
    ctl = RetryController(cfg, clock=clock, rng=random.Random(1))
    failed = retries = 0
    for _ in range(requests):
        state = ctl.start("key", "chat", "m")
        while True:
            state.before_attempt()
            if rng.random() >= rate:
                state.on_success()
                break
            decision = state.on_failure(status_error(503))
            if not decision.retry:
                failed += 1
                break
            retries += 1
        clock.advance(1.0 / per_second)
    return failed, retries


def test_default_budget_absorbs_a_30_percent_background_error_rate() -> None:
    defaults = RetryConfig(breaker_enabled=False)
    failed, retries = background_errors(defaults, 0.3, 3000, per_second=20.0)
    assert failed <= 0.3**4 * 3000 * 2  # only calls whose 4 attempts all failed (~0.8%), not budget refusals
    assert retries / 3000 == pytest.approx(0.3 + 0.09 + 0.027, abs=0.05)
    starved, _ = background_errors(RetryConfig(breaker_enabled=False, budget_ratio=0.2), 0.3, 3000, per_second=20.0)
    assert starved > 5 * failed  # the old 0.2 turned recoverable calls into failures


def test_default_budget_still_bounds_a_total_outage() -> None:
    cfg = RetryConfig(breaker_enabled=False)  # the defaults: ratio 0.5, floor 1/s over 10 s
    clock = FakeClock()
    ctl = RetryController(cfg, clock=clock, rng=random.Random(1))
    requests, retries = 200, 0
    for _ in range(requests):
        retries += len(run(ctl.start("key", "chat", "m"), status_error(503))) - 1
    floor = cfg.budget_min_retries_per_second * cfg.budget_window_seconds
    assert cfg.budget_ratio * requests <= retries <= cfg.budget_ratio * requests + floor  # not 3 x 200
