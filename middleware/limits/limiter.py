"""The limiter the pipeline calls: reserve before sending, learn from headers, settle afterwards.

Learning rule (``learn``): ``x-ratelimit-limit-*`` becomes the learned limit and the capacity is
the smaller of the configured and the learned limit. With the call's reservation, its
``x-ratelimit-remaining-*`` is compared with the level the model predicted for the moment the call
reached the upstream, and the model is corrected to the upstream's truth; the bias of the tokens
bucket (the upstream's tokens per token we estimate) and a safety margin are learned from those
corrections (``buckets`` module doc). Without a reservation (or on the Redis fallback)
``remaining`` only ever lowers the local level (``level = min(level, remaining)``): the header
excludes our reservations still in flight, while the local level already has them debited. The
first header for a resource starts its bucket at ``min(limit, remaining)``.
``x-ratelimit-reset-*`` is used as the cooldown when a 429 carries no retry-after. The local level
then refills continuously.

First burst (``initial_concurrency``, ``initial_tokens``, ``initial_wait_seconds``): while no limit
of a key is known, at most that many calls (and tokens) are in flight; the others wait until the
first response of the key arrives, then the calls still in flight are charged to the buckets its
headers created (they were sent without a charge) and everyone goes through the buckets. An
upstream that sends no rate-limit headers ends the phase too (the key is then unlimited), and so
does ``initial_wait_seconds`` without any answer (a call never waits longer for it).

Window rule: with ``window_seconds=None`` (the default) the requests and tokens buckets refill over
60 s until a window is learned; every response's ``limit``/``remaining``/``reset`` headers feed a
per-key ``WindowEstimator`` in this process (``reset`` = time until the bucket is full, so
``window = limit * reset / (limit - remaining)``, bounded by the rounding of ``remaining``; robust
over the last observations, only ``reset = 0`` ignored, clamped; see ``window.py``), and the estimate is
written to the backend (memory, or the Redis hash shared by all processes, where the newest estimate
of any process wins). A configured ``window_seconds`` is kept unless ``learn_from_headers`` is
``"override_window"``; ``learn_from_headers=False`` learns nothing.

Cooldown (``on_rate_limited``): the key is blocked until now + retry-after (server's; else the
reset header; else ``DEFAULT_COOLDOWN_SECONDS``) in every process sharing the backend, and the
resource's bucket is set to empty (debt is kept). Callers already waiting re-check the cooldown
when they wake up.

Wait budget: a reservation waits at most ``key.max_wait`` (the call's budget left, set by the
pipeline) or ``max_wait_seconds``; beyond it nothing is committed and ``ThrottleTimeout`` is raised.

Peers (Redis): every ``peer_ttl_seconds / 4`` an admission refreshes this process in a sorted set
of live processes and reads their number N. When Redis goes down, the local fallback holds ``1/N``
of every limit (the last N known), unless ``fallback_fraction`` is configured.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from middleware.errors import RequestTooLarge, ThrottleTimeout
from middleware.limits.events import LimiterEvents, NoopEvents, SafeEvents
from middleware.limits.headers import ABSENT, RatelimitHeaders, parse_ratelimit_headers
from middleware.limits.memory import MemoryBackend
from middleware.limits.router import BACKEND_ERRORS, Backend, Router
from middleware.limits.types import (
    DEFAULT_FALLBACK_FRACTION,
    LEARNABLE,
    REASON_COOLDOWN,
    REASON_NO_LIMITS,
    REQUESTS,
    TOKENS,
    BackendDecision,
    LearnedLimits,
    LimitConfig,
    LimiterKey,
    LimitState,
    Reservation,
)
from middleware.limits.window import WindowEstimator

_log = logging.getLogger(__name__)
DEFAULT_COOLDOWN_SECONDS = 1.0
PROBE_POLL_SECONDS = 0.01  # how often a call held back by the first-burst cap looks again
MIN_EXTRA_SECONDS = 0.001  # shorter extra waits after waking are not worth a sleep
REASON_INITIAL = "initial"  # the reason of a wait for the first response of a key


@dataclass
class _Initial:
    """Calls of one key in flight before any of its limits was known."""

    started: float
    calls: dict[str, Reservation] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.calls.values())


class _Bounded(OrderedDict[str, Any]):
    """A small LRU map: the least recently used entries go beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: str, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


def _present(requests: float | None, tokens: float | None) -> dict[str, float]:
    """The values given, by learnable bucket (``LEARNABLE``)."""
    if requests is not None and tokens is not None:
        return {REQUESTS: requests, TOKENS: tokens}
    out: dict[str, float] = {}
    if requests is not None:
        out[REQUESTS] = requests
    if tokens is not None:
        out[TOKENS] = tokens
    return out


class Limiter:
    """Request and token budgets per key; one object, safe to share between threads and asyncio tasks.

    Uses Redis when ``config.redis_url`` is set (see ``router`` for the fallback policy), otherwise
    memory. ``clock``/``sleep``/``async_sleep`` are injectable for tests; ``primary`` replaces the
    Redis backend (tests, custom shared backends).
    """

    def __init__(
        self, config: LimitConfig | None = None, events: LimiterEvents | None = None, *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        primary: Backend | None = None,
    ) -> None:
        self.config = config or LimitConfig()
        self._events = SafeEvents(events or NoopEvents())
        self._sleep = sleep
        self._async_sleep = async_sleep
        if primary is None and self.config.redis_url:
            from middleware.limits.redis_backend import RedisBackend

            redis_backend: Backend = RedisBackend(self.config)
            primary = redis_backend
        if primary is None:
            local = MemoryBackend(self.config, clock=clock)
        else:
            local = MemoryBackend(self.config, clock=clock, scale=self._fallback_fraction(None), name="fallback")
        self._local = local
        self._clock = clock
        self._queued: dict[str, tuple[float, str, int, int]] = {}  # Redis reservations still waiting
        self._queued_lock = threading.Lock()
        self._router = Router(
            local, self._events, primary=primary,
            retry_interval=self.config.redis_retry_interval_seconds, clock=clock,
            on_failover=self._failover, on_recover=self._restore,
        )
        self._estimators: _Bounded = _Bounded(self.config.max_keys)
        self._estimators_lock = threading.Lock()
        self._initial: dict[str, _Initial] = {}  # keys in their first burst (removed when it ends)
        self._headerless: _Bounded = _Bounded(self.config.max_keys)  # keys whose upstream sends no limits
        self._initial_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._learn_error_logged = False
        self.peer_id = secrets.token_hex(8)
        self._peers: int | None = None  # live processes last counted in Redis
        self._next_beat = -math.inf

    # ------------------------------------------------------------------ peers and fallback
    def _fallback_fraction(self, peers: int | None) -> float:
        if self.config.fallback_fraction is not None:
            return self.config.fallback_fraction
        return DEFAULT_FALLBACK_FRACTION if peers is None else 1.0 / max(1, peers)

    @property
    def peers(self) -> int | None:
        """Live processes sharing the Redis budget, as last counted (``None``: never counted)."""
        return self._peers

    @property
    def fallback_fraction(self) -> float:
        """The share of the budget the local fallback holds (now, or when Redis next fails)."""
        return self._local.scale

    def _heartbeat(self) -> None:
        """At most every ``peer_ttl_seconds / 4``: refresh our entry in the peers set and count the peers."""
        primary = self._router.primary
        if primary is None or self._router.degraded:
            return
        now = self._clock()
        if now < self._next_beat:
            return
        self._next_beat = now + self.config.peer_ttl_seconds / 4
        beat = getattr(primary, "peers", None)
        if beat is None:
            return
        try:
            count = int(beat(self.peer_id, self.config.peer_ttl_seconds))
        except BACKEND_ERRORS:
            return  # the operation that follows finds out and falls back
        self._peers = max(1, count)
        if not self._router.degraded:
            self._local.set_scale(self._fallback_fraction(self._peers))

    def _failover(self) -> None:
        """Redis just failed: the local buckets hold 1/N of the budget, start empty, charged with our calls
        still queued on Redis."""
        self._local.set_scale(self._fallback_fraction(self._peers))
        now = self._clock()
        queued: dict[str, tuple[int, int]] = {}
        with self._queued_lock:
            for admit_at, key_id, requests, tokens in self._queued.values():
                if admit_at > now:
                    r, t = queued.get(key_id, (0, 0))
                    queued[key_id] = (r + requests, t + tokens)
        self._local.drain(queued)

    def _restore(self, primary: Backend) -> None:
        """Redis answers again: lower its state to ours (a Redis restarted empty must not start full)."""
        for key_id, seen in self._local.export():
            primary.learn(LimiterKey(key_id, ""), seen)

    def _track(self, res: Reservation) -> bool:
        if res.wait_seconds <= 0 or res.backend == self._local.name:
            return False
        with self._queued_lock:
            self._queued[res.id] = (self._clock() + res.wait_seconds, res.key.id, res.requests, res.charged_tokens)
        return True

    def _untrack(self, res: Reservation) -> None:
        with self._queued_lock:
            self._queued.pop(res.id, None)

    @property
    def degraded(self) -> bool:
        """True while the shared backend is down and the local fallback answers."""
        return self._router.degraded

    # ------------------------------------------------------------------ admission
    def _max_wait(self, key: LimiterKey) -> float:
        return self.config.max_wait_seconds if key.max_wait is None else max(0.0, key.max_wait)

    def _admit(self, key: LimiterKey, tokens: int, waited: float = 0.0) -> Reservation | float:
        """Decide once (commit or refuse); raises RequestTooLarge or ThrottleTimeout without committing.

        Returns a positive float instead of a reservation when the call must wait for the first response of
        its key (see the module doc); ``waited`` is how long it has already waited for it.
        """
        tokens = max(0, int(tokens))
        max_wait = (self.config.max_wait_seconds if key.max_wait is None else max(0.0, key.max_wait)) - waited
        router = self._router
        backend: Backend
        if router.primary is None:  # what ``Router.run`` does then, without a closure; not timed (microseconds)
            backend = router.local
            decision = backend.reserve(key, tokens, max_wait)
        else:  # timed for shared backends
            self._heartbeat()
            started = time.perf_counter()
            decision, backend = router.run(lambda b: b.reserve(key, tokens, max_wait))
            self._events.limiter_decision_time(backend.name, time.perf_counter() - started)
        if decision.status == "too_large":
            raise RequestTooLarge(
                f"request of {tokens} tokens for {key.model} can never fit: "
                f"the {decision.reason} limit is {decision.limit:g}",
                tokens=tokens, limit=decision.limit,
            )
        if decision.status == "timeout":
            raise self._timeout(key, waited + decision.wait_seconds, decision.reason)
        res = Reservation(
            key=key, tokens=tokens, requests=1,
            decision="waited" if decision.wait_seconds > 0 else "admitted",
            reason=decision.reason, wait_seconds=decision.wait_seconds,
            id=f"{self._id_prefix}-{next(self._ids)}", backend=backend.name, charge=decision.charge,
        )
        if decision.reason == REASON_NO_LIMITS and decision.charge is None:
            return self._initial_slot(res, waited)
        return res

    def _initial_slot(self, res: Reservation, waited: float) -> Reservation | float:
        """A key with no known limit: take a slot of its first burst, or say how long to wait for one."""
        cfg = self.config
        if not cfg.learn_from_headers or cfg.initial_concurrency <= 0:
            return res
        key_id = res.key.id
        with self._initial_lock:
            if key_id in self._headerless:
                return res
            now = self._clock()
            initial = self._initial.get(key_id)
            if initial is None:
                initial = self._initial[key_id] = _Initial(now)
            elif now - initial.started >= cfg.initial_wait_seconds:  # no answer in time: stop holding calls back
                del self._initial[key_id]
                self._headerless.touch(key_id, True)
                return res
            calls, spent = len(initial.calls), initial.tokens
            fits = calls < cfg.initial_concurrency and (
                calls == 0 or cfg.initial_tokens is None or spent + res.tokens <= cfg.initial_tokens)
            if fits or waited >= min(cfg.initial_wait_seconds, self._max_wait(res.key)):
                res.probe = True
                initial.calls[res.id] = res
                return res
        return PROBE_POLL_SECONDS

    def _end_initial(self, key: LimiterKey, answered: Reservation | None, headerless: bool) -> None:
        """The first response of a key arrived: charge the calls still in flight to the new buckets."""
        if not headerless and key.id not in self._initial:
            return  # the usual case (the key's first burst is over): no lock
        with self._initial_lock:
            if headerless:
                self._headerless.touch(key.id, True)
            initial = self._initial.pop(key.id, None)
        if initial is None or headerless:
            return
        for res in initial.calls.values():
            if res is answered or res.closed:
                continue  # the answered call is in the upstream's remaining already
            try:
                decision, backend = self._router.run(self._charge_late(key, res.tokens))
            except Exception:
                continue
            if decision.status == "ok" and decision.charge is not None:
                res.charge, res.backend = decision.charge, backend.name

    @staticmethod
    def _charge_late(key: LimiterKey, tokens: int) -> Callable[[Backend], BackendDecision]:
        return lambda b: b.reserve(key, tokens, math.inf)

    def _leave_initial(self, res: Reservation) -> None:
        if not res.probe:
            return
        with self._initial_lock:
            initial = self._initial.get(res.key.id)
            if initial is not None:
                initial.calls.pop(res.id, None)

    def _timeout(self, key: LimiterKey, needed: float, reason: str) -> ThrottleTimeout:
        max_wait = self._max_wait(key)
        return ThrottleTimeout(
            f"{key.model}: admission would need {needed:.3f}s ({reason}), "
            f"more than max_wait_seconds={max_wait:g}",
            needed_seconds=needed, max_wait_seconds=max_wait, reason=reason,
        )

    def _extra(self, res: Reservation) -> float:
        """After waking at its admission: how much longer the call must wait, and why (see ``reserve``).

        A cooldown that started meanwhile past the wait budget raises ``ThrottleTimeout`` (the reservation
        is given back); a correction is only waited for within the budget.
        """
        charge = res.charge
        (left, shift), _ = self._router.run(lambda b: b.recheck(res.key, charge, res.tokens))
        budget = self._max_wait(res.key) - res.wait_seconds
        if left > 0 and left > budget:
            self.release(res)
            raise self._timeout(res.key, res.wait_seconds + left, REASON_COOLDOWN)
        taken = charge.delay if charge is not None else 0.0
        extra = min(max(left, shift - taken), budget)
        if extra < MIN_EXTRA_SECONDS:
            return 0.0
        res.decision, res.wait_seconds = "waited", res.wait_seconds + extra
        if left >= shift - taken:
            res.reason = REASON_COOLDOWN
        if charge is not None:
            res.charge = replace(charge, delay=taken + extra)
        return extra

    @staticmethod
    def _after_initial(res: Reservation, waited: float) -> Reservation:
        """A reservation made after ``waited`` seconds held back by the first-burst cap."""
        if waited > 0:
            res.decision, res.wait_seconds = "waited", res.wait_seconds + waited
            if res.wait_seconds <= waited or res.reason == REASON_NO_LIMITS:
                res.reason = REASON_INITIAL
        return res

    def reserve(self, key: LimiterKey, tokens: int) -> Reservation:
        """Reserve 1 request and ``tokens`` tokens, sleeping until admitted (FIFO).

        Raises ``ThrottleTimeout`` (with the seconds it would need) or ``RequestTooLarge`` at once. A call
        that slept until its admission checks again when it wakes: a cooldown that started meanwhile, or
        corrections that found the upstream below the schedule the call was queued on, make it wait the
        difference (``buckets.shift``), so queued calls follow the upstream's truth too.
        """
        waited = 0.0
        while isinstance(got := self._admit(key, tokens, waited), float):
            self._sleep(got)
            waited += got
        res = self._after_initial(got, waited)
        if res.wait_seconds > waited:
            tracked = self._track(res)
            try:
                self._sleep(res.wait_seconds - waited)
            finally:
                if tracked:
                    self._untrack(res)
            while (extra := self._extra(res)) > 0:
                self._sleep(extra)
        return res

    async def reserve_async(self, key: LimiterKey, tokens: int) -> Reservation:
        """``reserve`` for asyncio; a cancelled waiter gives its reservation back.

        The decision is the same code; with Redis it runs in a worker thread so the loop never blocks.
        """
        waited = 0.0
        while True:
            if self._router.primary is None:
                got = self._admit(key, tokens, waited)
            else:
                task = asyncio.ensure_future(asyncio.to_thread(self._admit, key, tokens, waited))
                try:
                    got = await asyncio.shield(task)
                except asyncio.CancelledError:
                    task.add_done_callback(self._release_finished)
                    raise
            if not isinstance(got, float):
                break
            await self._async_sleep(got)
            waited += got
        res = self._after_initial(got, waited)
        if res.wait_seconds <= waited:
            return res
        tracked = self._track(res)
        try:
            try:
                await self._async_sleep(res.wait_seconds - waited)
            finally:
                if tracked:
                    self._untrack(res)
            while (extra := await self._offload(self._extra, res)) > 0:
                await self._async_sleep(extra)
        except asyncio.CancelledError:
            self.release(res)
            raise
        return res

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._router.primary is None:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _release_finished(self, task: asyncio.Future[Reservation | float]) -> None:
        if not task.cancelled() and task.exception() is None:
            result = task.result()
            if isinstance(result, Reservation):
                self.release(result)

    # ------------------------------------------------------------------ after the call
    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Refund unused tokens or charge the excess once actual usage is known (idempotent).

        The difference is scaled by the bias the reservation was charged with (tokens as the upstream counts).
        """
        if reservation.closed:
            return
        reservation.closed = True
        self._leave_initial(reservation)
        charge = reservation.charge
        if charge is None:
            return
        raw = reservation.tokens - max(0, int(actual_tokens))
        price = reservation.charged_tokens
        delta = raw if price == reservation.tokens or not reservation.tokens else round(
            raw * price / reservation.tokens)
        if not delta:
            return
        local = self._router.local
        if reservation.backend == local.name:  # what ``Router.run_on`` does first, without a closure
            local.adjust(reservation.key, 0, delta, charge, raw)
        else:
            self._router.run_on(reservation.backend, lambda b: b.adjust(reservation.key, 0, delta, charge, raw))

    def release(self, reservation: Reservation) -> None:
        """Give the whole reservation back: the call never reached upstream (idempotent)."""
        if reservation.closed:
            return
        reservation.closed = True
        self._leave_initial(reservation)
        charge = reservation.charge
        if charge is None:
            return
        self._router.run_on(
            reservation.backend, lambda b: b.adjust(
                reservation.key, reservation.requests, reservation.charged_tokens, charge, reservation.tokens),
        )

    def learn(self, key: LimiterKey, headers: Mapping[str, str], reservation: Reservation | None = None) -> None:
        """Learn limits from ``x-ratelimit-*`` headers (see the module doc for the rule).

        ``reservation``: the call these headers answer (its prediction is compared with them). Learning never
        fails the call that brought the headers: an unexpected error is logged (once) and ignored.
        """
        if self.config.learn_from_headers:
            try:
                self._learn(key, parse_ratelimit_headers(headers), reservation)
            except Exception:
                self._learning_failed()

    def _learning_failed(self) -> None:
        if not self._learn_error_logged:
            self._learn_error_logged = True
            _log.exception("limiter: learning from headers failed (further failures are not logged)")

    def _learn(self, key: LimiterKey, parsed: RatelimitHeaders, reservation: Reservation | None,
               refused: bool = False) -> bool:
        """Learn from parsed headers; True when they were compared with the reservation's prediction."""
        if parsed is ABSENT:  # an upstream that sends no limits (vLLM, many gateways): nothing to learn
            self._events.ratelimit_header_error("absent")
            if reservation is not None:
                self._leave_initial(reservation)
            if not refused:
                self._end_initial(key, reservation, headerless=True)
            return False
        for reason in parsed.errors:
            self._events.ratelimit_header_error(reason)
        seen = LearnedLimits(_present(parsed.limit_requests, parsed.limit_tokens),
                             _present(parsed.remaining_requests, parsed.remaining_tokens),
                             self._learn_window(key, parsed, charged=not refused))
        if not seen.limits and not seen.remaining:
            if reservation is not None:
                self._leave_initial(reservation)
            if "absent" in parsed.errors and not refused:
                self._end_initial(key, reservation, headerless=True)
            return False
        charge = reservation.charge if reservation is not None else None
        if reservation is not None:
            self._leave_initial(reservation)  # answered: its first-burst slot is free
        backend_name = reservation.backend if reservation is not None else None
        router = self._router
        used: Backend
        if router.primary is None:  # what ``Router.run`` does then, without a closure
            used = router.local
            states = used.learn(key, seen, charge if used.name == backend_name else None)
        else:
            states, used = router.run(lambda b: b.learn(key, seen, charge if b.name == backend_name else None))
        if used is not self._local:
            tokens = states.get(TOKENS)
            self._local.learn(key, replace(seen, bias=tokens.bias if tokens is not None else None))
        self._end_initial(key, reservation, headerless=False)
        for resource, state in states.items():
            self._events.limits_learned(key.model, resource, state.limit, state.remaining)
        return any(st.used for st in states.values())  # only the backend that made the charge can use it

    def _learn_window(self, key: LimiterKey, parsed: RatelimitHeaders, charged: bool = True) -> float | None:
        """Feed the key's window estimator; its estimate (``None``: no window is learned).

        ``charged``: the headers came with a response to a call charged one request (not a refusal).
        """
        if not self.config.learns_window:
            return None
        with self._estimators_lock:
            estimator = self._estimators.get(key.id)
            if estimator is None:
                estimator = WindowEstimator()
            self._estimators.touch(key.id, estimator)
        # the least deficit each bucket shows: one request when the call was charged, tokens unknown (0)
        informative = estimator.observe(parsed.limit_requests, parsed.remaining_requests, parsed.reset_requests,
                                        1.0 if charged else 0.0)
        informative = estimator.observe(parsed.limit_tokens, parsed.remaining_tokens, parsed.reset_tokens,
                                        0.0) or informative
        return estimator.estimate() if informative else None

    def learned_window(self, key: LimiterKey) -> float | None:
        """This process's current window estimate for ``key`` (``None``: none yet or not learning)."""
        with self._estimators_lock:
            estimator = self._estimators.get(key.id)
        return None if estimator is None or not self.config.learns_window else estimator.estimate()

    def on_rate_limited(
        self, key: LimiterKey, resource: str | None, retry_after_seconds: float | None,
        headers: Mapping[str, str], reservation: Reservation | None = None,
    ) -> None:
        """A 429 of type ``requests``/``tokens`` (``None`` = unknown: both): cool the key down and correct it.

        Other resource values (e.g. ``insufficient_quota``) are ignored. ``reservation``: the refused call; its
        prediction is compared with the headers (which say what the upstream holds without it), so the model
        is corrected to the upstream's truth (its release refunds the charge, and the corrections count the
        refund). Without a comparable header, the refused resource is emptied instead.
        """
        if resource is not None and resource not in LEARNABLE:
            return
        resources = LEARNABLE if resource is None else (resource,)
        parsed = parse_ratelimit_headers(headers)
        try:
            used = self.config.learn_from_headers and self._learn(key, parsed, reservation, refused=True)
        except Exception:
            self._learning_failed()
            used = False
        seconds = retry_after_seconds
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            resets = [v for r in resources if (v := parsed.reset(r)) is not None]
            seconds = max(resets) if resets else DEFAULT_COOLDOWN_SECONDS
        # without a compared header, the crude correction: the refused resource is empty
        self._router.run_everywhere(lambda b: b.cooldown(key, seconds, resources, not used))
        self._events.cooldown(key.model, resource or "unknown", seconds)

    # ------------------------------------------------------------------ introspection
    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]:
        """Limit and remaining level per known resource (for gauges); negative remaining = queued debt."""
        states, _ = self._router.run(lambda b: b.snapshot(key))
        return states

    def state_sizes(self) -> dict[str, int]:
        """Entries held per in-memory structure (all bounded by ``max_keys`` or by the calls in flight)."""
        return {"keys": self._local.size, "estimators": len(self._estimators), "initial": len(self._initial),
                "headerless": len(self._headerless), "queued": len(self._queued)}

    def close(self) -> None:
        """Leave the peers set and release backend connections."""
        primary = self._router.primary
        leave = getattr(primary, "peers", None)
        if leave is not None and self._peers is not None and not self._router.degraded:
            try:
                leave(self.peer_id, self.config.peer_ttl_seconds, False)
            except BACKEND_ERRORS:
                pass
        self._router.close()

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
