"""Retries end to end: the real protected client (sync and async) against the simulator's fault injection.

Delays are checked against the simulator's own arrival times (``x-sim-tag``), not against our bookkeeping.

Nothing here depends on how fast a loaded machine runs (the suite shares two cores with a matrix of SDK
versions): outages are counted faults (the next N requests fail, whenever they come), not time windows; the
fail-fast breaker runs on a clock the test moves; a test waits on a condition (polled, with a generous timeout),
never on a sleep. Measured delays are bounded below by what was chosen (a sleep never ends early); above, only
loosely, to catch a wait of the wrong kind (whole seconds for milliseconds, a second backoff stacked on ours) or
a hang -- speed is for the benchmarks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from middleware import Config
from middleware.client import protect
from middleware.errors import CircuitOpenError, RetryAfterTooLong, attempt_history
from middleware.pipeline import Pipeline
from middleware.retry import CLOSED, HALF_OPEN, OPEN, RetryConfig, RetryController
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from tests.fixtures.telemetry import TelemetryKit
from tests.http import http as httpx2

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MODEL = "gpt-4o"
ROUTE = "/chat/completions"
BASE = 0.05  # first backoff, jitter "none": the retry after failed attempt k waits BASE * 2**(k-1)
SLACK = 0.5  # above a chosen delay: scheduling, HTTP and loop overhead on a loaded box (catches gross errors only)
FAST = RetryConfig(base_delay=BASE, max_delay=0.4, jitter="none", budget_enabled=False, breaker_enabled=False)
MODES = ("sync", "async")


class ManualClock:
    """A monotonic clock that moves only when the test says so: a breaker's open window ends when the test
    advances it, not when a loaded machine gets around to the next step."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it is true; the timeout only catches a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.01)


class Caller:
    """One pipeline (one budget, one breaker) and a way to make a call through it, sync or async."""

    def __init__(self, sim: Simulator, telemetry: TelemetryKit, mode: str, retry: RetryConfig,
                 timeout: float = 10.0, http_client: Any = None, clock: Callable[[], float] | None = None) -> None:
        self.sim, self.mode, self.timeout, self.http_client = sim, mode, timeout, http_client
        controller = None if clock is None else RetryController.from_config(
            retry, events=telemetry.recorder, clock=clock)
        self.pipeline = Pipeline(Config(retry=retry), telemetry.recorder, retry=controller)

    def __call__(self, fault: str | None = None, *, once: bool = False, times: int | None = None,
                 tag: str | None = None) -> Any:
        """One call; ``fault`` on every attempt, or on the first only (``once``), or on the first ``times``."""
        headers = {"x-sim-tag": tag or uuid.uuid4().hex}
        if fault is not None:
            headers["x-sim-fault"] = fault
            if once:
                headers["x-sim-fault-once"] = uuid.uuid4().hex
            elif times is not None:
                headers["x-sim-fault-key"] = uuid.uuid4().hex
                headers["x-sim-fault-times"] = str(times)
        if self.mode == "sync":
            client = protect(openai.OpenAI(api_key="sk-test", base_url=self.sim.base_url, timeout=self.timeout,
                                           http_client=self.http_client), pipeline=self.pipeline)
            return client.chat.completions.create(model=MODEL, messages=USER, extra_headers=headers)
        return asyncio.run(self.acall(headers))

    async def acall(self, headers: dict[str, str]) -> Any:
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=self.sim.base_url, timeout=self.timeout) as raw:
            client = protect(raw, pipeline=self.pipeline)
            return await client.chat.completions.create(model=MODEL, messages=USER, extra_headers=headers)

    def breaker_state(self) -> str:
        breaker = self.pipeline.retry.breaker
        assert breaker is not None
        return breaker.state(ROUTE, MODEL)


@pytest.fixture
def caller(simulator: Simulator, telemetry: TelemetryKit) -> Callable[..., Caller]:
    def make(mode: str = "sync", retry: RetryConfig = FAST, **kwargs: Any) -> Caller:
        return Caller(simulator, telemetry, mode, retry, **kwargs)

    return make


def tagged(sim: Simulator, caller: Caller, fault: str | None, **kwargs: Any) -> tuple[Any, list[float]]:
    """Make one call with a fresh tag; returns (result or exception, server arrival times)."""
    tag = uuid.uuid4().hex
    try:
        result: Any = caller(fault, tag=tag, **kwargs)
    except Exception as exc:
        result = exc
    return result, sim.request_times(tag)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# ---------------------------------------------------------------- every retryable class, once then success

RETRYABLE = [
    ("status=429;type=requests;code=rate_limit_exceeded;retry_after=0.4", "rate_limit", 0.4),
    ("status=429;type=tokens;code=rate_limit_exceeded;retry_after=0.3", "rate_limit", 0.3),
    ("status=408", "request_timeout", None),
    ("status=409", "conflict", None),
    ("status=500", "server_error", None),
    ("status=502", "server_error", None),
    ("status=503", "server_error", None),
    ("status=503;retry_after=0.3", "server_error", 0.3),
    ("reset", "connection", None),
    ("delay=2", "timeout", None),  # the client's 0.3 s read timeout fires first
    ("status=400;should_retry=true", "should_retry_header", None),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault", "reason", "retry_after"), RETRYABLE, ids=[r[0] for r in RETRYABLE])
def test_retryable_fault_is_retried_after_the_right_delay(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit, mode: str, fault: str,
    reason: str, retry_after: float | None,
) -> None:
    timeout = 0.3 if reason == "timeout" else 10.0
    result, times = tagged(simulator, caller(mode, timeout=timeout), fault, once=True)
    assert isinstance(result, openai.types.chat.ChatCompletion), result
    assert len(times) == 2
    # The wait we chose: the server's retry-after (plus <= 5% jitter; retry-after-ms, not the whole seconds of
    # retry-after), else the first backoff step.
    expected = retry_after if retry_after is not None else BASE
    (call,) = telemetry.spans(f"chat {MODEL}")
    (chosen,) = [(e.attributes[n.A_REASON], e.attributes[n.A_DELAY_SECONDS]) for e in call.events
                 if e.name == n.E_BACKOFF]
    assert chosen[0] == reason and expected <= chosen[1] <= expected * 1.05, chosen
    # ... and waited for, as the server saw it: never less (a sleep does not end early), not grossly more.
    spent = gaps(times)[0] - (timeout if reason == "timeout" else 0.0)
    assert expected <= spent + 0.01, (spent, expected)  # 10 ms: clock granularity between client and server
    assert spent <= expected * 1.05 + SLACK, (spent, expected)


@pytest.mark.parametrize("mode", MODES)
def test_backoff_grows_between_attempts_until_max_attempts(
    simulator: Simulator, caller: Callable[..., Caller], mode: str
) -> None:
    result, times = tagged(simulator, caller(mode), "status=500")
    assert isinstance(result, openai.InternalServerError)
    history = attempt_history(result)
    assert [a.outcome for a in history] == ["retryable"] * 4  # the class stays retryable; attempts ran out
    assert len(times) == FAST.max_attempts == len(history)
    expected = [BASE, 2 * BASE, 4 * BASE]
    assert [round(a.delay_seconds, 6) for a in history[:-1]] == expected
    for spent, want in zip(gaps(times), expected, strict=True):
        assert want - 0.01 <= spent <= want + SLACK


# ---------------------------------------------------------------- every terminal class: at once, typed, with history

TERMINAL: list[tuple[str, type[Exception], str]] = [
    ("insufficient_quota", openai.RateLimitError, "insufficient_quota"),
    ("insufficient_quota;should_retry=true", openai.RateLimitError, "insufficient_quota"),
    ("status=400;code=billing_hard_limit_reached", openai.BadRequestError, "billing"),
    ("status=429;type=insufficient_quota;code=billing_not_active", openai.RateLimitError, "insufficient_quota"),
    ("too_large", openai.RateLimitError, "request_too_large"),
    ("status=400", openai.BadRequestError, "bad_request"),
    ("status=401", openai.AuthenticationError, "auth"),
    ("status=403", openai.PermissionDeniedError, "permission"),
    ("status=404", openai.NotFoundError, "not_found"),
    ("status=422", openai.UnprocessableEntityError, "unprocessable"),
    ("status=400;code=content_policy_violation", openai.BadRequestError, "content_policy"),
    ("status=500;should_retry=false", openai.InternalServerError, "should_not_retry_header"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault", "error", "reason"), TERMINAL, ids=[t[0] for t in TERMINAL])
def test_terminal_fault_fails_at_once(
    simulator: Simulator, caller: Callable[..., Caller], mode: str, fault: str, error: type[Exception], reason: str
) -> None:
    result, times = tagged(simulator, caller(mode), fault)
    assert type(result) is error, repr(result)
    assert len(times) == 1
    history = attempt_history(result)
    assert len(history) == 1
    record = history[0]
    assert (record.attempt, record.outcome, record.reason, record.delay_seconds) == (1, "terminal", reason, 0.0)
    assert record.status == result.status_code  # type: ignore[attr-defined]
    assert record.request_id and record.request_id == result.request_id  # type: ignore[attr-defined]
    assert any("middleware attempts" in note for note in getattr(result, "__notes__", []))


def test_insufficient_quota_is_never_retried(simulator: Simulator, caller: Callable[..., Caller]) -> None:
    """Server-side exhausted quota, a generous config: still exactly one attempt per call."""
    simulator.set_faults(quota_exhausted=True)
    retry = RetryConfig(max_attempts=10, base_delay=0.01, jitter="none", per_class={"rate_limit": 9})
    call = caller("sync", retry)
    for _ in range(3):
        result, times = tagged(simulator, call, None)
        assert isinstance(result, openai.RateLimitError)
        assert len(times) == 1
        assert [a.reason for a in attempt_history(result)] == ["insufficient_quota"]
    assert simulator.stats()["total"]["received"] == 3


# ---------------------------------------------------------------- retry-after cap, deadline

@pytest.mark.parametrize("mode", MODES)
def test_retry_after_above_cap_raises_naming_the_server_value(
    simulator: Simulator, caller: Callable[..., Caller], mode: str
) -> None:
    retry = RetryConfig(max_retry_after=1.0, budget_enabled=False, breaker_enabled=False)
    started = time.monotonic()
    result, times = tagged(simulator, caller(mode, retry), "status=429;type=requests;retry_after=7.5")
    assert time.monotonic() - started < 7.5  # it did not wait the server's 7.5 s (nor any part of it: see below)
    assert isinstance(result, RetryAfterTooLong)
    assert result.retry_after_seconds == 7.5 and result.max_retry_after_seconds == 1.0
    assert "7.5s" in str(result)
    assert isinstance(result.__cause__, openai.RateLimitError)
    assert len(times) == 1
    assert [(a.reason, a.status, a.delay_seconds) for a in attempt_history(result)] == [("rate_limit", 429, 0.0)]


DEADLINE = 1.5
STEP = 0.3


@pytest.mark.parametrize("mode", MODES)
def test_total_deadline_stops_retrying(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit, mode: str
) -> None:
    retry = RetryConfig(max_attempts=10, base_delay=STEP, max_delay=STEP, jitter="none", deadline_seconds=DEADLINE,
                        budget_enabled=False, breaker_enabled=False)
    call = caller(mode, retry)
    tagged(simulator, call, None)  # warm-up: a cold first call (imports, tokenizer) would eat into the deadline
    telemetry.exporter.clear()
    started = time.monotonic()
    result, times = tagged(simulator, call, "status=503")
    elapsed = time.monotonic() - started
    assert isinstance(result, openai.InternalServerError)
    history = attempt_history(result)
    assert len(history) == len(times) and history[-1].outcome == "retryable" and history[-1].delay_seconds == 0.0
    # Attempts are at least STEP apart (real waits), and a retry is planned only if it starts within the
    # deadline: at most 1 + DEADLINE / STEP = 6 of them, whatever the load -- the deadline stopped the call,
    # not max_attempts (10). At least one retry fits unless one attempt takes longer than DEADLINE - STEP.
    assert all(gap >= STEP - 0.01 for gap in gaps(times)), times
    assert 2 <= len(times) <= 1 + round(DEADLINE / STEP) < retry.max_attempts, times
    # No backoff slept without an attempt after it: the call stopped when the next one would not fit.
    (span,) = telemetry.spans(f"chat {MODEL}")
    assert len([e for e in span.events if e.name == n.E_BACKOFF]) == len(times) - 1
    assert elapsed < DEADLINE + 10  # a hang guard only


# ---------------------------------------------------------------- retry budget against a storm

def test_retry_budget_bounds_extra_attempts_during_total_outage(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit
) -> None:
    # The window outlasts the test on any machine, so the bound below holds however slowly the calls run.
    retry = RetryConfig(max_attempts=4, base_delay=0.001, max_delay=0.002, budget_ratio=0.2,
                        budget_min_retries_per_second=0.1, budget_window_seconds=60.0, breaker_enabled=False)
    call = caller("sync", retry)
    simulator.set_faults(outage=True)
    calls = 60

    def one(_: int) -> BaseException | None:
        try:
            call()
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(4) as pool:
        errors = list(pool.map(one, range(calls)))
    assert all(isinstance(e, openai.InternalServerError) for e in errors)
    received = simulator.stats()["total"]["received"]
    allowed_extra = retry.budget_ratio * calls + retry.budget_min_retries_per_second * retry.budget_window_seconds
    assert calls < received <= calls + allowed_extra, received  # without a budget: 4 x 60 = 240
    stops = [len(attempt_history(e)) for e in errors if e is not None]
    assert stops.count(1) > 0  # some calls were refused a retry
    assert telemetry.sample(f"{n.P}_retry_budget_exhausted_total") > 0


# ---------------------------------------------------------------- circuit breaker

BREAKER = RetryConfig(max_attempts=1, budget_enabled=False, breaker_min_calls=4, breaker_failure_ratio=0.5,
                      breaker_window_seconds=10.0, breaker_open_seconds=0.4, breaker_half_open_probes=1,
                      breaker_max_wait_seconds=0.0)  # the classic fail-fast breaker


@pytest.mark.parametrize("mode", MODES)
def test_breaker_opens_fails_fast_probes_and_closes(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit, mode: str
) -> None:
    clock = ManualClock()  # the breaker's clock: its open window ends when the test says, however slow the box
    call = caller(mode, BREAKER, clock=clock)
    simulator.set_faults(outage=True)
    for _ in range(4):
        with pytest.raises(openai.InternalServerError):
            call()
    assert call.breaker_state() == OPEN
    received = simulator.stats()["total"]["received"]
    result, times = tagged(simulator, call, None)
    assert isinstance(result, CircuitOpenError) and times == []  # failed fast: nothing sent upstream
    assert (result.endpoint, result.model) == (ROUTE, MODEL)
    assert result.retry_in_seconds == pytest.approx(BREAKER.breaker_open_seconds)
    assert simulator.stats()["total"]["received"] == received

    clock.advance(BREAKER.breaker_open_seconds)  # open -> half-open: one probe goes through, fails, opens again
    result, times = tagged(simulator, call, None)
    assert isinstance(result, openai.InternalServerError) and len(times) == 1
    assert call.breaker_state() == OPEN
    result, times = tagged(simulator, call, None)
    assert isinstance(result, CircuitOpenError) and times == []  # open for a whole window again

    simulator.set_faults(outage=False)
    clock.advance(BREAKER.breaker_open_seconds)
    result, times = tagged(simulator, call, None)  # the probe succeeds: closed
    assert isinstance(result, openai.types.chat.ChatCompletion) and len(times) == 1
    assert call.breaker_state() == CLOSED
    result, _ = tagged(simulator, call, None)
    assert isinstance(result, openai.types.chat.ChatCompletion)
    transitions = [telemetry.sample(f"{n.P}_circuit_breaker_transitions_total", endpoint=ROUTE, state=s)
                   for s in (OPEN, HALF_OPEN, CLOSED)]
    assert transitions == [2, 2, 1]
    assert simulator.stats()["total"]["received"] == received + 3


def test_half_open_admits_one_probe_and_refuses_the_rest(simulator: Simulator, caller: Callable[..., Caller]) -> None:
    probe_tag, release = uuid.uuid4().hex, threading.Event()

    def hold(response: httpx2.Response) -> None:  # the probe's answer has arrived; its call ends once released
        if response.request.headers.get("x-sim-tag") == probe_tag:
            release.wait(30)

    clock = ManualClock()
    call = caller("sync", BREAKER, clock=clock, http_client=httpx2.Client(event_hooks={"response": [hold]}))
    _open_then_half_open(call, simulator, clock)
    try:
        with ThreadPoolExecutor(4) as pool:
            probe = pool.submit(call, None, tag=probe_tag)
            wait_until(lambda: simulator.request_times(probe_tag), "the probe to reach the simulator")
            others = [pool.submit(tagged, simulator, call, None) for _ in range(3)]
            for f in others:  # while the probe is in flight, the other calls are refused without sending
                result, times = f.result(timeout=30)
                assert isinstance(result, CircuitOpenError) and times == [], result
            assert call.breaker_state() == HALF_OPEN
            release.set()
            assert isinstance(probe.result(timeout=30), openai.types.chat.ChatCompletion)
    finally:
        release.set()
    assert call.breaker_state() == CLOSED
    assert len(simulator.request_times(probe_tag)) == 1


# ---------------------------------------------------------------- waiting (bounded) for an open circuit

OPEN_S = 0.4
# Real clock from here on (the calls really sleep); the bound on waiting is generous: it is not what these
# tests measure, and a loaded machine must not turn a wait into CircuitOpenError (its own test sets it tight).
WAIT = dataclasses.replace(BREAKER, max_attempts=4, base_delay=0.01, max_delay=0.05, breaker_max_wait_seconds=30.0)


def force_open(call: Caller) -> None:
    breaker = call.pipeline.retry.breaker
    assert breaker is not None
    for _ in range(WAIT.breaker_min_calls):
        breaker.record(ROUTE, MODEL, "failure")
    assert call.breaker_state() == OPEN


def concurrently(call: Caller, mode: str, count: int) -> tuple[list[Any], list[float], list[float]]:
    """``count`` concurrent calls (threads, or tasks on one event loop): (results, all arrival times, the times
    at which a ticker task on the same event loop ran, async only)."""
    tags = [uuid.uuid4().hex for _ in range(count)]
    ticks: list[float] = []

    async def many() -> list[Any]:
        done = asyncio.Event()

        async def ticker() -> None:  # the loop must stay free while calls wait for the circuit
            while not done.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(*(call.acall({"x-sim-tag": t}) for t in tags), return_exceptions=True)
        done.set()
        await tick
        return list(results)

    if mode == "async":
        results = asyncio.run(many())
    else:
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda tag: _call(call, tag), tags))
    times = sorted(t for tag in tags for t in call.sim.request_times(tag))
    return results, times, ticks


def _call(call: Caller, tag: str) -> Any:
    try:
        return call(None, tag=tag)
    except Exception as exc:
        return exc


FAILED_PROBES = 2


@pytest.mark.parametrize("mode", MODES)
def test_open_circuit_waits_sending_only_probes_then_succeeds_after_the_outage(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit, mode: str
) -> None:
    # A probe that has not reported back within a window expires and another is let through (by design): the
    # window is long enough for a probe's round trip on a loaded machine, so probes never overlap here.
    window = 1.0
    call = caller(mode, dataclasses.replace(WAIT, breaker_open_seconds=window))
    # The outage is counted, not timed: the next FAILED_PROBES requests fail, however long the calls take to come.
    simulator.set_faults(fault_times=[("status=503", FAILED_PROBES)])
    opened = time.monotonic()  # the simulator runs in this process: its arrival times are on this clock
    force_open(call)
    results, times, ticks = concurrently(call, mode, 3)
    assert all(isinstance(r, openai.types.chat.ChatCompletion) for r in results), results
    assert simulator.faults()["fault_times"] == []  # the outage was served in full...
    assert simulator.stats()["total"]["faults"] == {"status_503": FAILED_PROBES}
    # ... to probes only: the failed probes, the one that succeeded, then the two other calls -- not 3 calls x 4
    # attempts. The others were held back (not refused: they succeeded) until the circuit closed.
    assert len(times) == simulator.stats()["total"]["received"] == FAILED_PROBES + 3, times
    probes = times[:FAILED_PROBES + 1]
    assert probes[0] >= opened + window - 0.01, (opened, times)  # nothing sent while open
    for gap in gaps(probes):
        assert gap >= window - 0.01, times  # one probe at a time, one per open window
    assert call.breaker_state() == CLOSED
    if mode == "async":  # the event loop stayed free: the ticker ran all through every open window
        for a, b in itertools.pairwise(probes):
            assert sum(a < t < b for t in ticks) >= 5, (a, b, ticks)  # ~50 at 20 ms; a blocked loop: 0 or 1
    waits = [e for s in telemetry.spans(f"chat {MODEL}") for e in s.events
             if e.name == n.E_BACKOFF and e.attributes[n.A_REASON] == "circuit_open"]
    assert len(waits) >= FAILED_PROBES  # at least every failed probe's call waited for the next window
    assert telemetry.sample(f"{n.P}_backoff_seconds_count", reason="circuit_open") == len(waits)


@pytest.mark.parametrize("mode", MODES)
def test_open_circuit_wait_beyond_the_bound_raises_circuit_open(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit, mode: str
) -> None:
    # The bound leaves room for one window, not two. The call opens the circuit itself (its failure is the one
    # that trips it), so its waiting starts with the window: it would take a stall of most of a window between
    # that failure and the wait for the call to fit a second probe in its bound.
    window = 1.0
    bounded = dataclasses.replace(WAIT, breaker_open_seconds=window, breaker_max_wait_seconds=window * 1.1)
    call = caller(mode, bounded)
    breaker = call.pipeline.retry.breaker
    assert breaker is not None
    for _ in range(bounded.breaker_min_calls - 1):
        breaker.record(ROUTE, MODEL, "failure")
    assert call.breaker_state() == CLOSED
    simulator.set_faults(outage=True)
    result, times = tagged(simulator, call, None)
    # Failed (opening the circuit), waited one window, probed (failed, re-opened); one more window would pass
    # the bound: failed at once, caused by the probe's error.
    assert isinstance(result, CircuitOpenError), result
    assert isinstance(result.__cause__, openai.InternalServerError)
    assert len(times) == 2 and times[1] - times[0] >= window - 0.01, times
    assert [a.reason for a in attempt_history(result)] == ["server_error", "server_error"]
    (span,) = telemetry.spans(f"chat {MODEL}")
    attempts = sorted((s for s in telemetry.spans() if s.parent and s.parent.span_id == span.context.span_id),
                      key=lambda s: s.start_time)
    waits = [e for e in span.events if e.name == n.E_BACKOFF and e.attributes[n.A_REASON] == "circuit_open"]
    assert len(attempts) == 2 and waits
    assert all(attempts[0].end_time <= e.timestamp <= attempts[1].start_time for e in waits)  # none after the probe

    # A window further away than the whole bound: refused without waiting, nothing sent.
    telemetry.exporter.clear()
    short = caller(mode, dataclasses.replace(WAIT, breaker_open_seconds=30.0, breaker_max_wait_seconds=0.2))
    force_open(short)
    result, times = tagged(simulator, short, None)
    assert isinstance(result, CircuitOpenError) and times == [] and result.retry_in_seconds > 0.2
    (span,) = telemetry.spans(f"chat {MODEL}")
    assert [e for e in span.events if e.name == n.E_BACKOFF] == []


def test_waiting_for_a_redis_shared_circuit(simulator: Simulator, caller: Callable[..., Caller],
                                            redis_url: str) -> None:
    shared = dataclasses.replace(WAIT, redis_url=redis_url, redis_prefix=uuid.uuid4().hex)
    opener, waiter = caller("sync", shared), caller("async", shared)  # two pipelines: two "processes"
    simulator.set_faults(fault_times=[("status=503", 1)])  # the outage: the first probe fails, the next succeeds
    opened = time.monotonic()
    force_open(opener)
    assert waiter.breaker_state() == OPEN  # seen through Redis
    result, times = tagged(simulator, waiter, None)
    assert isinstance(result, openai.types.chat.ChatCompletion), result
    assert len(times) == 2, times  # the failed probe, then the one that closed the circuit
    assert times[0] >= opened + OPEN_S - 0.02 and times[1] - times[0] >= OPEN_S - 0.02, (opened, times)
    assert opener.breaker_state() == CLOSED


# ---------------------------------------------------------------- cancellation frees a half-open probe slot

def _open_then_half_open(call: Caller, sim: Simulator, clock: ManualClock) -> None:
    sim.set_faults(outage=True)
    for _ in range(4):
        with pytest.raises(openai.InternalServerError):
            call()
    sim.set_faults(outage=False)
    assert call.breaker_state() == OPEN
    clock.advance(BREAKER.breaker_open_seconds)


def test_cancelled_async_probe_frees_the_half_open_slot(simulator: Simulator, caller: Callable[..., Caller]) -> None:
    clock = ManualClock()  # stands still: a probe slot never expires, only freeing it lets the next call through
    call = caller("async", BREAKER, clock=clock)
    _open_then_half_open(call, simulator, clock)
    tag = uuid.uuid4().hex

    async def cancel_probe() -> None:
        task = asyncio.create_task(call.acall({"x-sim-fault": "delay=30", "x-sim-tag": tag}))
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(simulator.request_times, tag):  # the probe is in flight
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_probe())
    result, _ = tagged(simulator, call, None)
    assert isinstance(result, openai.types.chat.ChatCompletion), result
    assert call.breaker_state() == CLOSED


def test_keyboard_interrupt_during_probe_frees_the_half_open_slot(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit
) -> None:
    interrupt = threading.Event()

    def hook(request: httpx2.Request) -> None:
        if interrupt.is_set():
            interrupt.clear()
            raise KeyboardInterrupt

    clock = ManualClock()
    call = caller("sync", BREAKER, http_client=httpx2.Client(event_hooks={"request": [hook]}), clock=clock)
    _open_then_half_open(call, simulator, clock)
    interrupt.set()
    with pytest.raises(KeyboardInterrupt):
        call()
    result, _ = tagged(simulator, call, None)
    assert isinstance(result, openai.types.chat.ChatCompletion), result
    assert call.breaker_state() == CLOSED
    # The interrupted attempt's span was ended too (not leaked).
    attempts = telemetry.spans(n.SPAN_ATTEMPT.format(method="POST", route=ROUTE))
    assert any(s.attributes.get(n.A_REASON) == "cancelled" for s in attempts)


# ---------------------------------------------------------------- one trace per retried call

@pytest.mark.parametrize("mode", MODES)
def test_retried_call_is_one_trace_with_one_child_per_attempt(
    simulator: Simulator, caller: Callable[..., Caller], telemetry: TelemetryKit, mode: str
) -> None:
    retry = RetryConfig(base_delay=0.1, max_delay=1.0, jitter="none", budget_enabled=False, breaker_enabled=False)
    call = caller(mode, retry)
    result, times = tagged(simulator, call, "status=503", times=2)  # the first two attempts fail, the third succeeds
    assert isinstance(result, openai.types.chat.ChatCompletion), result
    assert len(times) == 3 and all(gap >= want - 0.01 for gap, want in zip(gaps(times), (0.1, 0.2), strict=True))

    calls = telemetry.spans(f"chat {MODEL}")
    assert len(calls) == 1
    parent = calls[0]
    spans = [s for s in telemetry.spans() if s.context.trace_id == parent.context.trace_id]
    children = sorted((s for s in spans if s is not parent), key=lambda s: s.start_time)
    assert {s.parent.span_id for s in children if s.parent} == {parent.context.span_id}
    assert len(children) == 3 and all(s.name == f"POST {ROUTE}" for s in children)
    assert [s.attributes[n.A_ATTEMPT] for s in children] == [1, 2, 3]
    assert [s.attributes.get(n.A_HTTP_RESEND_COUNT) for s in children] == [None, 1, 2]
    assert [s.attributes[n.A_HTTP_STATUS] for s in children] == [503, 503, 200]
    assert [s.attributes[n.A_REASON] for s in children] == ["server_error", "server_error", "ok"]
    assert [s.status.status_code.name for s in children] == ["ERROR", "ERROR", "UNSET"]
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(children))
    backoffs = [e for e in parent.events if e.name == n.E_BACKOFF]
    assert [(e.attributes[n.A_ATTEMPT], e.attributes[n.A_REASON], e.attributes[n.A_DELAY_SECONDS])
            for e in backoffs] == [(1, "server_error", 0.1), (2, "server_error", 0.2)]
    assert parent.end_time >= children[-1].end_time


@pytest.fixture(autouse=True)
def _no_outage_left(simulator: Simulator) -> Iterator[None]:
    yield
    simulator.set_faults(outage=False, fault_rates={}, fault_times=[], quota_exhausted=False)

