"""Retry decisions for one call; the pipeline owns the loop and the sleeping (sync or async).

Rate limits are waits, not failures: a 429 of type requests/tokens (never ``insufficient_quota`` nor
"Request too large", which classify as terminal) is retried for as long as the call's wait budget
lasts (``LimitConfig.max_wait_seconds``, given to ``start``: the time the call spent waiting for
capacity in the limiter plus the delays after 429s), whatever ``max_attempts`` says (that cap is for
failures of the upstream; ``per_class["rate_limit"]`` still caps them when set explicitly), and it
spends nothing of the retry budget (which guards against storms of 5xx). When the next wait would
not fit in what is left, the call fails with ``RateLimitWaitExceeded`` (how long it waited, on which
resource, under which limit), caused by the last 429.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from middleware.errors import AttemptRecord, CircuitOpenError, RetryAfterTooLong, ThrottleTimeout
from middleware.redisconn import RedisEvents, handle_for
from middleware.telemetry import names as n

from .backoff import compute_backoff, retry_after_delay
from .breaker import OPEN, BreakerPermit, CircuitBreaker, Outcome
from .budget import RetryBudget
from .classify import CANCELLED, OPT_IN_REASONS, FailureClass, classify
from .config import RetryConfig
from .errors import RateLimitWaitExceeded
from .events import NoopRetryEvents, RetryEvents, SafeEvents
from .redis_breaker import RedisCircuitBreaker
from .redis_budget import RedisRetryBudget

MIN_CIRCUIT_WAIT = 0.001  # the shortest wait before_attempt asks for; below it the call fails (bound reached)
DEFAULT_WAIT_BUDGET = 60.0  # LimitConfig.max_wait_seconds' default, for a controller used without a limiter
RATE_LIMIT = "rate_limit"


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a failed attempt. ``error``, when set, is raised instead of the original exception."""

    retry: bool
    delay_seconds: float
    failure: FailureClass
    stop_reason: str | None = None  # terminal, max_attempts, deadline, budget_exhausted, retry_after_too_long, ...
    error: BaseException | None = None


class RetryController:
    """Shared by every call of a client: holds the config, the budget, the breaker and the event sink."""

    def __init__(self, config: RetryConfig, budget: RetryBudget | None = None, breaker: CircuitBreaker | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 events: RetryEvents | None = None) -> None:
        self.config = config
        self.budget = (budget or RetryBudget(config, clock)) if config.budget_enabled else None
        self.breaker = (breaker or CircuitBreaker(config, clock)) if config.breaker_enabled else None
        self.clock = clock
        self.rng = rng or random.Random()
        self.events: RetryEvents = SafeEvents(events or NoopRetryEvents())

    @classmethod
    def from_config(cls, config: RetryConfig, *, events: RetryEvents | None = None, redis: Any = None,
                    clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> RetryController:
        """A controller with in-memory budget and breaker, or Redis-shared ones when ``redis`` (a
        ``middleware.redisconn`` handle or link, a URL or a client) or ``config.redis_url`` is given.

        A URL gets the default ``RedisConfig`` policy; the pipeline passes a handle under ``Config.redis``'s.
        ``events`` also receives the Redis fallbacks when it implements ``RedisEvents`` (the Recorder does)."""
        budget: RetryBudget | None = None
        breaker: CircuitBreaker | None = None
        target = redis if redis is not None else config.redis_url
        if target is not None:
            sink = events if isinstance(events, RedisEvents) else None
            handle = handle_for(target, n.REDIS_FEATURE_RETRY, events=sink)
            if config.budget_enabled:
                budget = RedisRetryBudget(config, handle, prefix=config.redis_prefix)
            if config.breaker_enabled:
                breaker = RedisCircuitBreaker(config, handle, prefix=config.redis_prefix)
        return cls(config, budget, breaker, clock=clock, rng=rng, events=events)

    @property
    def shared(self) -> bool:
        """True when the budget or the breaker keeps its state in Redis (their decisions then do network I/O)."""
        return isinstance(self.budget, RedisRetryBudget) or isinstance(self.breaker, RedisCircuitBreaker)

    def start(self, key: str, endpoint: str, model: str, wait_budget: float = DEFAULT_WAIT_BUDGET) -> CallRetryState:
        """Begin one call: ``key`` selects the retry budget, (endpoint, model) the circuit breaker;
        ``wait_budget`` bounds the call's waits for capacity (admission waits and 429 delays)."""
        if self.budget is not None:
            self.budget.deposit(key)
        return CallRetryState(self, key, endpoint, model, wait_budget)


class CallRetryState:
    """The retry state of one call: attempts made, delays chosen and the attempt history."""

    def __init__(self, controller: RetryController, key: str, endpoint: str, model: str,
                 wait_budget: float = DEFAULT_WAIT_BUDGET) -> None:
        self._c = controller
        self.key, self.endpoint, self.model = key, endpoint, model
        self.started_at = controller.clock()
        self.attempt = 0
        self.history: list[AttemptRecord] = []
        self._retries: Counter[str] = Counter()
        self._capped = 0  # retries counted against max_attempts (rate limits are not, unless per_class says so)
        self.wait_budget = wait_budget
        self.capacity_waited = 0.0  # seconds waited for capacity: admission waits and delays after 429s
        self._rate_limited: tuple[BaseException, FailureClass] | None = None  # the last 429
        self._previous_delay: float | None = None
        self._permit = BreakerPermit(True, "closed")
        self._in_flight = False
        self._waited = 0.0  # seconds spent waiting for an open circuit, in finished waits
        self._wait_started: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self._c.clock() - self.started_at

    @property
    def wait_left(self) -> float:
        """Seconds of the wait budget this call may still spend waiting for capacity."""
        return max(0.0, self.wait_budget - self.capacity_waited)

    def admitted(self, waited_seconds: float) -> None:
        """The limiter admitted an attempt after ``waited_seconds``: they count against the wait budget."""
        self.capacity_waited += max(0.0, waited_seconds)

    def throttle_error(self, exc: ThrottleTimeout) -> BaseException:
        """The error to raise when the limiter refused an attempt for want of wait budget.

        After a 429 it is the clear ``RateLimitWaitExceeded`` (caused by that 429), else ``exc`` itself.
        """
        if self._rate_limited is None:
            return exc
        return self._wait_exceeded(exc.needed_seconds, *self._rate_limited)

    def _wait_exceeded(self, needed: float, cause: BaseException, failure: FailureClass) -> RateLimitWaitExceeded:
        resource, limit = failure.rate_limit_resource, failure.rate_limit_limit
        on = f"on {resource}" if resource else "(resource not named by the server)"
        under = f" (limit {limit:g})" if limit is not None else ""
        error = RateLimitWaitExceeded(
            f"{self.model}: still rate limited {on}{under} after waiting {self.capacity_waited:.1f}s for capacity; "
            f"the next attempt would need {needed:.1f}s more, past max_wait_seconds={self.wait_budget:g}",
            needed_seconds=needed, max_wait_seconds=self.wait_budget, waited_seconds=self.capacity_waited,
            resource=resource, limit=limit, model=self.model)
        error.__cause__ = cause
        return error

    def before_attempt(self) -> float:
        """Call before each attempt: 0.0 means send it now (it is counted); a positive value means the circuit is
        open, so sleep that many seconds and ask again (nothing was sent nor counted).

        While the circuit is open a call waits for the next half-open probe window (or, while another call's probe
        is in flight, polls every ``breaker_open_seconds / 10``, jittered), for at most
        ``breaker_max_wait_seconds`` in total and never past ``deadline_seconds``. Raises CircuitOpenError as soon
        as the circuit would not admit the attempt within that bound (at once when the bound is 0).
        """
        breaker = self._c.breaker
        if breaker is not None:
            permit = breaker.acquire(self.endpoint, self.model)
            self._transition(permit.transition)
            if not permit.allowed:
                return self._circuit_wait(permit)
            self._permit = permit
            self._stop_waiting()
        self.attempt += 1
        self._in_flight = True
        return 0.0

    @property
    def circuit_waited(self) -> float:
        """Seconds this call has spent waiting for an open circuit so far."""
        if self._wait_started is None:
            return self._waited
        return self._waited + max(0.0, self._c.clock() - self._wait_started)

    def _circuit_wait(self, permit: BreakerPermit) -> float:
        if self._wait_started is None:
            self._wait_started = self._c.clock()
        allowance = self._wait_allowance()
        cfg = self._c.config
        poll = cfg.breaker_open_seconds / 10
        if permit.state == OPEN:  # admitted (as the probe, or after it) no sooner than the window opens
            needed = permit.retry_in_seconds
            wait = needed + self._c.rng.uniform(0.0, poll / 2)
        else:  # half-open, the probe slots taken: it may close any moment
            needed = 0.0
            wait = self._c.rng.uniform(poll / 2, poll)
        if allowance < MIN_CIRCUIT_WAIT or needed > allowance:
            self._stop_waiting()
            raise self._circuit_open(permit.retry_in_seconds)
        return max(MIN_CIRCUIT_WAIT, min(wait, allowance))

    def _wait_allowance(self, after: float = 0.0) -> float:
        """Seconds this call may still wait for the circuit, ``after`` seconds from now."""
        cfg = self._c.config
        allowance = cfg.breaker_max_wait_seconds - self.circuit_waited
        if cfg.deadline_seconds is not None:
            allowance = min(allowance, cfg.deadline_seconds - self.elapsed - after)
        return max(0.0, allowance)

    def _stop_waiting(self) -> None:
        if self._wait_started is not None:
            self._waited = self.circuit_waited
            self._wait_started = None

    def on_success(self) -> None:
        """Call after a successful attempt."""
        self._in_flight = False
        self._record_breaker("success")
        self.history.append(AttemptRecord(self.attempt, "success", "ok"))

    def on_failure(self, exc: BaseException) -> RetryDecision:
        """Call after a failed attempt; the pipeline sleeps ``delay_seconds`` and retries, or stops."""
        failure = classify(exc)
        self._in_flight = False
        self._record_breaker("failure" if failure.counts_for_breaker else "neutral")
        decision = self._decide(exc, failure)
        self.history.append(AttemptRecord(
            self.attempt, "retryable" if failure.retryable else "terminal", failure.reason, failure.status,
            failure.error_type, decision.delay_seconds, failure.request_id))
        if decision.retry:
            self._retries[failure.reason] += 1
            if self._counts_against_attempts(failure.reason):
                self._capped += 1
            if failure.reason == RATE_LIMIT:
                self.capacity_waited += decision.delay_seconds
            self._previous_delay = decision.delay_seconds
        return decision

    def _counts_against_attempts(self, reason: str) -> bool:
        return reason != RATE_LIMIT or RATE_LIMIT in self._c.config.per_class

    def on_cancel(self, *, sent: bool = True) -> None:
        """Call when an attempt begun with ``before_attempt`` ends without a verdict: asyncio.CancelledError,
        KeyboardInterrupt, the flow closed; or (``sent=False``) it was never sent (the wait for capacity failed).

        Frees the half-open probe slot the attempt held (counting neither success nor failure), so that the
        next call can probe at once instead of waiting for the slot to expire. A sent attempt is recorded as
        "cancelled"; an unsent one is forgotten. Idempotent, and a no-op between attempts (nothing is held
        during a backoff sleep).
        """
        if not self._in_flight:
            return
        self._in_flight = False
        self._record_breaker("neutral")
        if sent:
            self.history.append(AttemptRecord(self.attempt, "terminal", CANCELLED))
        else:
            self.attempt -= 1

    def _decide(self, exc: BaseException, failure: FailureClass) -> RetryDecision:
        cfg, reason = self._c.config, failure.reason
        if not (failure.retryable or (reason in OPT_IN_REASONS and cfg.max_retries_for(reason) > 0)):
            return RetryDecision(False, 0.0, failure, "terminal")
        capped = self._counts_against_attempts(reason)
        if capped and (self._retries[reason] >= cfg.max_retries_for(reason) or self._capped >= cfg.total_retry_cap):
            return RetryDecision(False, 0.0, failure, "max_attempts")
        server_delay = failure.retry_after_seconds
        if server_delay is not None and server_delay > cfg.max_retry_after:
            error = RetryAfterTooLong(
                f"server asked to retry after {server_delay:g}s, above max_retry_after={cfg.max_retry_after:g}s",
                retry_after_seconds=server_delay, max_retry_after_seconds=cfg.max_retry_after)
            error.__cause__ = exc
            return RetryDecision(False, 0.0, failure, "retry_after_too_long", error)
        if server_delay:
            delay = retry_after_delay(server_delay, self._c.rng)
        else:
            delay = compute_backoff(self.attempt, cfg, self._previous_delay, self._c.rng)
        if cfg.deadline_seconds is not None and self.elapsed + delay > cfg.deadline_seconds:
            return RetryDecision(False, 0.0, failure, "deadline")
        if reason == RATE_LIMIT:  # a wait, within the wait budget; never a retry-budget withdrawal
            self._rate_limited = (exc, failure)
            if delay > self.wait_left:
                return RetryDecision(False, 0.0, failure, "wait_budget", self._wait_exceeded(delay, exc, failure))
        breaker = self._c.breaker
        wait = breaker.retry_in(self.endpoint, self.model) if breaker is not None else 0.0
        if wait > delay and wait - delay > self._wait_allowance(after=delay):  # else before_attempt will wait
            refused = self._circuit_open(wait)
            refused.__cause__ = exc
            return RetryDecision(False, 0.0, failure, "circuit_open", refused)
        budget = self._c.budget
        if budget is not None and reason != RATE_LIMIT and not budget.try_withdraw(self.key):
            self._c.events.retry_budget_exhausted(self.model)
            return RetryDecision(False, 0.0, failure, "budget_exhausted")
        return RetryDecision(True, delay, failure)

    def _record_breaker(self, outcome: Outcome) -> None:
        breaker = self._c.breaker
        if breaker is not None:
            self._transition(breaker.record(self.endpoint, self.model, outcome, self._permit.probe))
            self._permit = BreakerPermit(True, "closed")

    def _transition(self, state: str | None) -> None:
        if state is not None:
            self._c.events.breaker_transition(self.endpoint, self.model, state)

    def _circuit_open(self, retry_in: float) -> CircuitOpenError:
        return CircuitOpenError(
            f"circuit open for {self.endpoint} {self.model}; retry in {retry_in:.1f}s",
            endpoint=self.endpoint, model=self.model, retry_in_seconds=retry_in)
