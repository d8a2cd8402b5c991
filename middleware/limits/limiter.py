"""The limiter the pipeline calls: reserve before sending, learn from headers, settle afterwards.

Learning rule (``learn``): ``x-ratelimit-limit-*`` becomes the learned limit and the capacity is
the smaller of the configured and the learned limit. ``x-ratelimit-remaining-*`` only ever lowers
the local level (``level = min(level, remaining)``): the header counts what upstream had admitted
when it answered, which excludes our reservations still in flight, while the local level already
has them debited; taking the minimum corrects for other consumers of the same key without
re-crediting in-flight calls (a stale or early header can never raise the level). The first header
for a resource starts its bucket at ``min(limit, remaining)``. ``x-ratelimit-reset-*`` is used as
the cooldown when a 429 carries no retry-after. The local level then refills continuously.

Window rule: with ``window_seconds=None`` (the default) the requests and tokens buckets refill over
60 s until a window is learned; every response's ``limit``/``remaining``/``reset`` headers feed a
per-key ``WindowEstimator`` in this process (``reset`` = time until the bucket is full, so
``window = limit * reset / (limit - remaining)``, bounded by the rounding of ``remaining``; robust
over the last observations, ``reset = 0`` ignored, clamped; see ``window.py``), and the estimate is
written to the backend (memory, or the Redis hash shared by all processes, where the newest estimate
of any process wins). A configured ``window_seconds`` is kept unless ``learn_from_headers`` is
``"override_window"``; ``learn_from_headers=False`` learns nothing.

Cooldown (``on_rate_limited``): the key is blocked until now + retry-after (server's; else the
reset header; else ``DEFAULT_COOLDOWN_SECONDS``) in every process sharing the backend, and the
resource's bucket is set to empty (debt is kept). Callers already waiting re-check the cooldown
when they wake up.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from middleware.errors import RequestTooLarge, ThrottleTimeout
from middleware.limits.events import LimiterEvents, NoopEvents, SafeEvents
from middleware.limits.headers import RatelimitHeaders, parse_ratelimit_headers
from middleware.limits.memory import MemoryBackend
from middleware.limits.router import Backend, Router
from middleware.limits.types import (
    LEARNABLE,
    REASON_COOLDOWN,
    LearnedLimits,
    LimitConfig,
    LimiterKey,
    LimitState,
    Reservation,
)
from middleware.limits.window import WindowEstimator

DEFAULT_COOLDOWN_SECONDS = 1.0


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
            local = MemoryBackend(self.config, clock=clock, scale=self.config.fallback_fraction, name="fallback")
        self._local = local
        self._clock = clock
        self._queued: dict[str, tuple[float, str, int, int]] = {}  # Redis reservations still waiting
        self._queued_lock = threading.Lock()
        self._router = Router(
            local, self._events, primary=primary,
            retry_interval=self.config.redis_retry_interval_seconds, clock=clock,
            on_failover=self._failover, on_recover=self._restore,
        )
        self._estimators: dict[str, WindowEstimator] = {}
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)

    def _failover(self) -> None:
        """Redis just failed: the local buckets start empty, charged with our calls still queued on Redis."""
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
            self._queued[res.id] = (self._clock() + res.wait_seconds, res.key.id, res.requests, res.tokens)
        return True

    def _untrack(self, res: Reservation) -> None:
        with self._queued_lock:
            self._queued.pop(res.id, None)

    @property
    def degraded(self) -> bool:
        """True while the shared backend is down and the local fallback answers."""
        return self._router.degraded

    # ------------------------------------------------------------------ admission
    def _admit(self, key: LimiterKey, tokens: int) -> Reservation:
        """Decide once (commit or refuse); raises RequestTooLarge or ThrottleTimeout without committing."""
        tokens = max(0, int(tokens))
        max_wait = self.config.max_wait_seconds
        started = time.perf_counter()
        decision, backend = self._router.run(lambda b: b.reserve(key, tokens, max_wait))
        if self._router.primary is not None:  # timed for shared backends; in memory it is microseconds
            self._events.limiter_decision_time(backend.name, time.perf_counter() - started)
        if decision.status == "too_large":
            raise RequestTooLarge(
                f"request of {tokens} tokens for {key.model} can never fit: "
                f"the {decision.reason} limit is {decision.limit:g}",
                tokens=tokens, limit=decision.limit,
            )
        if decision.status == "timeout":
            raise self._timeout(key, decision.wait_seconds, decision.reason)
        return Reservation(
            key=key, tokens=tokens, requests=1,
            decision="waited" if decision.wait_seconds > 0 else "admitted",
            reason=decision.reason, wait_seconds=decision.wait_seconds,
            id=f"{self._id_prefix}-{next(self._ids)}", backend=backend.name, charge=decision.charge,
        )

    def _timeout(self, key: LimiterKey, needed: float, reason: str) -> ThrottleTimeout:
        max_wait = self.config.max_wait_seconds
        return ThrottleTimeout(
            f"{key.model}: admission would need {needed:.3f}s ({reason}), "
            f"more than max_wait_seconds={max_wait:g}",
            needed_seconds=needed, max_wait_seconds=max_wait, reason=reason,
        )

    def _cooldown_extra(self, res: Reservation) -> float:
        """After waking: how much longer a cooldown that started meanwhile blocks us (raises past max_wait)."""
        left, _ = self._router.run(lambda b: b.cooldown_left(res.key))
        if left <= 0:
            return 0.0
        if res.wait_seconds + left > self.config.max_wait_seconds:
            self.release(res)
            raise self._timeout(res.key, res.wait_seconds + left, REASON_COOLDOWN)
        return left

    @staticmethod
    def _waited(res: Reservation, extra: float) -> Reservation:
        return replace(res, decision="waited", reason=REASON_COOLDOWN, wait_seconds=res.wait_seconds + extra)

    def reserve(self, key: LimiterKey, tokens: int) -> Reservation:
        """Reserve 1 request and ``tokens`` tokens, sleeping until admitted (FIFO).

        Raises ``ThrottleTimeout`` (with the seconds it would need) or ``RequestTooLarge`` at once.
        """
        res = self._admit(key, tokens)
        if res.wait_seconds > 0:
            tracked = self._track(res)
            try:
                self._sleep(res.wait_seconds)
            finally:
                if tracked:
                    self._untrack(res)
            while (extra := self._cooldown_extra(res)) > 0:
                self._sleep(extra)
                res = self._waited(res, extra)
        return res

    async def reserve_async(self, key: LimiterKey, tokens: int) -> Reservation:
        """``reserve`` for asyncio; a cancelled waiter gives its reservation back.

        The decision is the same code; with Redis it runs in a worker thread so the loop never blocks.
        """
        if self._router.primary is None:
            res = self._admit(key, tokens)
        else:
            task = asyncio.ensure_future(asyncio.to_thread(self._admit, key, tokens))
            try:
                res = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(self._release_finished)
                raise
        if res.wait_seconds <= 0:
            return res
        tracked = self._track(res)
        try:
            try:
                await self._async_sleep(res.wait_seconds)
            finally:
                if tracked:
                    self._untrack(res)
            while (extra := await self._offload(self._cooldown_extra, res)) > 0:
                await self._async_sleep(extra)
                res = self._waited(res, extra)
        except asyncio.CancelledError:
            self.release(res)
            raise
        return res

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._router.primary is None:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _release_finished(self, task: asyncio.Future[Reservation]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.release(task.result())

    # ------------------------------------------------------------------ after the call
    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Refund unused tokens or charge the excess once actual usage is known (idempotent)."""
        charge = reservation.charge
        if reservation.closed or charge is None:
            return
        reservation.closed = True
        delta = reservation.tokens - max(0, int(actual_tokens))
        if delta:
            self._router.run_on(reservation.backend, lambda b: b.adjust(reservation.key, 0, delta, charge))

    def release(self, reservation: Reservation) -> None:
        """Give the whole reservation back: the call never reached upstream (idempotent)."""
        charge = reservation.charge
        if reservation.closed or charge is None:
            return
        reservation.closed = True
        self._router.run_on(
            reservation.backend, lambda b: b.adjust(reservation.key, reservation.requests, reservation.tokens, charge),
        )

    def learn(self, key: LimiterKey, headers: Mapping[str, str]) -> None:
        """Learn limits from ``x-ratelimit-*`` headers (see the module doc for the rule)."""
        if self.config.learn_from_headers:
            self._learn(key, parse_ratelimit_headers(headers))

    def _learn(self, key: LimiterKey, parsed: RatelimitHeaders) -> None:
        for reason in parsed.errors:
            self._events.ratelimit_header_error(reason)
        seen = LearnedLimits(
            {r: v for r in LEARNABLE if (v := parsed.limit(r)) is not None},
            {r: v for r in LEARNABLE if (v := parsed.remaining(r)) is not None},
            self._learn_window(key, parsed),
        )
        if not seen.limits and not seen.remaining:
            return
        states = self._router.run_everywhere(lambda b: b.learn(key, seen))
        for resource, state in states.items():
            self._events.limits_learned(key.model, resource, state.limit, state.remaining)

    def _learn_window(self, key: LimiterKey, parsed: RatelimitHeaders) -> float | None:
        """Feed the key's window estimator; its estimate (``None``: no window is learned)."""
        if not self.config.learns_window:
            return None
        estimator = self._estimators.get(key.id)
        if estimator is None:
            estimator = self._estimators.setdefault(key.id, WindowEstimator())
        informative = [estimator.observe(parsed.limit(r), parsed.remaining(r), parsed.reset(r)) for r in LEARNABLE]
        return estimator.estimate() if any(informative) else None

    def learned_window(self, key: LimiterKey) -> float | None:
        """This process's current window estimate for ``key`` (``None``: none yet or not learning)."""
        estimator = self._estimators.get(key.id)
        return None if estimator is None or not self.config.learns_window else estimator.estimate()

    def on_rate_limited(
        self, key: LimiterKey, resource: str | None, retry_after_seconds: float | None,
        headers: Mapping[str, str],
    ) -> None:
        """A 429 of type ``requests``/``tokens`` (``None`` = unknown: both): cool the key down, empty the bucket.

        Other resource values (e.g. ``insufficient_quota``) are ignored.
        """
        if resource is not None and resource not in LEARNABLE:
            return
        resources = LEARNABLE if resource is None else (resource,)
        parsed = parse_ratelimit_headers(headers)
        if self.config.learn_from_headers:
            self._learn(key, parsed)
        seconds = retry_after_seconds
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            resets = [v for r in resources if (v := parsed.reset(r)) is not None]
            seconds = max(resets) if resets else DEFAULT_COOLDOWN_SECONDS
        self._router.run_everywhere(lambda b: b.cooldown(key, seconds, resources))
        self._events.cooldown(key.model, resource or "unknown", seconds)

    # ------------------------------------------------------------------ introspection
    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]:
        """Limit and remaining level per known resource (for gauges); negative remaining = queued debt."""
        states, _ = self._router.run(lambda b: b.snapshot(key))
        return states

    def close(self) -> None:
        """Release backend connections."""
        self._router.close()

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
