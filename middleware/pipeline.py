"""The stage sequence of one protected call, owned from its begin to its settlement.

``call_sync`` / ``call_async`` take one :class:`~middleware.sdk.SdkRequest` from the protected
client's funnel and walk it through the stages, passing the :class:`CallContext` explicitly:

    open      the span; forced streaming; the attempt options; the estimate; the limiter key
    flow      the attempt loop: breaker, admission (Reserve), the attempt (Send), backoff (Sleep)
    deliver   a plain result is settled and the call ends; a stream carries the call until it ends
    settle    the reservation against the reported usage (one rule, :meth:`Pipeline.charge`)

The decisions of the attempt loop are written once, as a generator that yields *effects*; a sync
and an async driver carry them out. The stages around it are plain functions shared by both. A
stream's observer (``streaming/observer.py``) reports chunks and asks the pipeline to resume a
broken stream (:meth:`resume_sync` / :meth:`resume_async`) and to settle it at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .config import Config
from .context import CallContext
from .cost import BudgetExceeded, BudgetWait, Cost, CostServices, Unpriced, Usage, usage_from
from .errors import MiddlewareError, RequestTooLarge, ThrottleTimeout, attach_history
from .limits import Limiter, LimiterKey, Reservation
from .limits.redis_backend import RedisBackend
from .redisconn import RedisHandle, link_for
from .retry import RetryController, classify
from .sdk import SdkRequest, Sent, compat, read_json_body
from .streaming.forced import force_reason
from .streaming.observer import ResumePlan, Seed, StreamObserver
from .streaming.progress import PROGRESS_CALLBACK
from .streaming.request import acollect, attempt_changes, collect, forced_body
from .streaming.services import StreamingServices
from .telemetry import names as n
from .telemetry.recorder import Recorder
from .tokens import Estimate, OutputPredictor, TokenEstimator, max_output_tokens
from .tokens.tally import fallback_tokens


@dataclass(frozen=True, slots=True)
class Send:
    """Effect: send one attempt with these options."""

    options: Any


@dataclass(frozen=True, slots=True)
class Sleep:
    """Effect: wait this long (backoff, or an open circuit)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Reserve:
    """Effect: reserve limiter capacity (may wait)."""

    key: LimiterKey
    tokens: int


@dataclass(frozen=True, slots=True)
class Budget:
    """Effect: one budget decision for a call's worst-case cost (a reservation, a wait, or None)."""

    ctx: CallContext


Effect = Send | Sleep | Reserve | Budget
Flow = Generator[Effect, Any, Sent]


def usage_of(result: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens from a parsed response object (chat, responses, embeddings)."""
    usage = getattr(result, "usage", None)
    if usage is None:
        return None, None
    inp = getattr(usage, "prompt_tokens", None)
    if inp is None:
        inp = getattr(usage, "input_tokens", None)
    out = getattr(usage, "completion_tokens", None)
    if out is None:
        out = getattr(usage, "output_tokens", None)
    return (inp if isinstance(inp, int) else None), (out if isinstance(out, int) else None)


def usage_from_json(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens from a JSON body."""
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens"))
    return (inp if isinstance(inp, int) else None), (out if isinstance(out, int) else None)


class Pipeline:
    """Runs calls through estimate, admit, the attempt loop, the stream and settle, reporting to one Recorder."""

    def __init__(
        self,
        config: Config,
        recorder: Recorder,
        *,
        estimator: TokenEstimator | None = None,
        predictor: OutputPredictor | None = None,
        limiter: Limiter | None = None,
        retry: RetryController | None = None,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.estimator = estimator or TokenEstimator(default_encoding=config.default_encoding, events=recorder)
        self.predictor = predictor or OutputPredictor()
        self.limiter = limiter or self._limiter(config, recorder)
        self.retry = retry or RetryController.from_config(
            config.retry, events=recorder, redis=self._redis(n.REDIS_FEATURE_RETRY))
        self._key_prefix_cache: dict[str, str] = {}
        self._limiter_keys: dict[tuple[str, str], LimiterKey] = {}
        self.streaming = StreamingServices(config.streaming, recorder,
                                           redis=self._redis(n.REDIS_FEATURE_CHECKPOINT))
        self.cost = CostServices(config.cost, events=recorder, redis=self._redis(n.REDIS_FEATURE_BUDGET))

    def _redis(self, feature: str) -> RedisHandle | None:
        """The feature's Redis (``Config.redis_for``) as a handle on the process's shared link, or None."""
        redis = self.config.redis_for(feature)
        return None if redis is None else link_for(redis).feature(feature, self.recorder)

    def _limiter(self, config: Config, recorder: Recorder) -> Limiter:
        handle = self._redis(n.REDIS_FEATURE_LIMITER)
        if handle is None:
            return Limiter(config.limits, events=recorder)
        limits = replace(config.limits, redis_url=handle.config.url)
        return Limiter(limits, events=recorder, primary=RedisBackend(limits, redis=handle))

    # ------------------------------------------------------------------ the call, sync and async
    def call_sync(self, request: SdkRequest, *, seed: Seed | None = None) -> Any:
        """Run one call to the result the caller receives (sync)."""
        ctx = self.open(request, seed)
        try:
            sent = self._drive_sync(ctx, self.flow(ctx))
        except BaseException as exc:
            self.fail(ctx, exc)
            raise
        result = self.deliver(ctx, sent)
        return collect(result, request.cast_to) if ctx.forced_stream else result

    async def call_async(self, request: SdkRequest, *, seed: Seed | None = None) -> Any:
        """Run one call to the result the caller receives (async)."""
        ctx = self.open(request, seed)
        try:
            sent = await self._drive_async(ctx, self.flow(ctx))
        except BaseException as exc:
            self.fail(ctx, exc)
            raise
        result = self.deliver(ctx, sent)
        return await acollect(result, request.cast_to) if ctx.forced_stream else result

    def resume_sync(self, ctx: CallContext, plan: ResumePlan) -> Any:
        """Send the resumed request of a broken stream through admission and the retry loop (sync)."""
        child = self._resumption(ctx, plan)
        try:
            return self._drive_sync(child, self.flow(child)).result
        except BaseException:
            self._resumption_failed(ctx, child)
            raise

    async def resume_async(self, ctx: CallContext, plan: ResumePlan) -> Any:
        """Async twin of :meth:`resume_sync`."""
        child = self._resumption(ctx, plan)
        try:
            return (await self._drive_async(child, self.flow(child))).result
        except BaseException:
            self._resumption_failed(ctx, child)
            raise

    def _resumption_failed(self, ctx: CallContext, child: CallContext) -> None:
        """A resumed request that never streamed: it leaves the stream's settlement, its budget hold is freed."""
        if ctx.observer is not None:
            ctx.observer.disown(child)
        if child.budget is not None:
            try:
                self.cost.release(child.budget)
            except Exception as exc:
                self.recorder.telemetry_error("cost", exc)

    # ------------------------------------------------------------------ stages
    def open(self, request: SdkRequest, seed: Seed | None = None) -> CallContext:
        """Begin the call: its span and context, forced streaming, attempt options, estimate, limiter key."""
        body = request.body or (seed.body if seed is not None else {})
        model = body.get("model")
        model_name = model if isinstance(model, str) and model else "unknown"
        host, port = request.server
        ctx = self.recorder.start_call(request.operation, request.route, model_name, body, stream=request.stream,
                                       server_address=host, server_port=port)
        ctx.request = request
        ctx.seed = seed
        try:
            ctx.tags = self.cost.tags_for(body)
            if ctx.tags:
                self.recorder.tagged(ctx)
            if request.can_force_stream():
                reason = force_reason(self.streaming.config, self.streaming.adaptive, ctx.model, body)
                if reason is not None:
                    new_body = forced_body(body)
                    request = ctx.request = request.as_forced_stream(new_body)
                    ctx.body, ctx.stream, ctx.forced_stream = new_body, True, True
                    self.recorder.forced_stream(ctx, reason)
            ctx.options = self._attempt_options(ctx, request)
            ctx.limiter_key = self.limiter_key(request.api_key, ctx.model)
            ctx.reserve_tokens = self.estimate(ctx)
            if ctx.stream and request.observe:
                ctx.progress_callback = PROGRESS_CALLBACK.get() or self.streaming.config.on_progress
                ctx.observer = StreamObserver(self, ctx)
        except BaseException as exc:
            self.fail(ctx, exc)
            raise
        return ctx

    def _attempt_options(self, ctx: CallContext, request: SdkRequest) -> Any:
        """The options every attempt sends: SDK retries off; streams get usage, background and the idle timeout."""
        if not ctx.stream:
            return request.with_options()
        body, idle = attempt_changes(self.streaming.config, ctx, request)
        return request.with_options(body=body, idle_timeout=idle)

    def key_hash(self, api_key: str) -> str:
        """The 12-hex-digit SHA-256 prefix that names an API key in limiter and budget keys (never the key)."""
        prefix = self._key_prefix_cache.get(api_key)
        if prefix is None:
            prefix = hashlib.sha256(api_key.encode()).hexdigest()[:12]
            if len(self._key_prefix_cache) < 64:
                self._key_prefix_cache[api_key] = prefix
        return prefix

    def limiter_key(self, api_key: str, model: str) -> LimiterKey:
        """A hash of the API key plus the model (or '*' when one budget is shared across models)."""
        keys = self._limiter_keys
        key = keys.get((api_key, model))
        if key is None:
            scope = "*" if self.config.limiter_scope == "shared" else model
            key = LimiterKey(id=f"{self.key_hash(api_key)}:{scope}", model=model)
            if len(keys) >= 1024:  # models come from callers: the map stays bounded
                keys.clear()
            keys[(api_key, model)] = key
        return key

    def estimate(self, ctx: CallContext, *, record: bool = True) -> int:
        """Estimate the call's tokens; return what to reserve (:meth:`reserve_for`)."""
        est_max: int | None = None
        predicted: int | None = None
        body = ctx.body
        try:
            est_max = max_output_tokens(ctx.operation, body)
            predicted = self.predictor.predict(ctx.model, ctx.operation, est_max)
        except Exception as exc:
            self.recorder.telemetry_error("predict", exc)
        try:
            est = self.estimator.estimate(ctx.operation, ctx.model, body, predicted_output=predicted)
        except Exception as exc:  # safety net (the estimator reads hostile bodies part by part): the body's bytes
            self.recorder.telemetry_error("estimate", exc)
            est = Estimate(fallback_tokens(body), est_max, predicted, "fallback", "bytes", ("body",))
        ctx.estimate = est
        if record:
            self.recorder.estimate(ctx, est)
        return self.reserve_for(est)

    # The one settle rule: what a call reserves, and what it is charged once usage is known.
    def reserve_for(self, est: Estimate | None) -> int:
        """Tokens to reserve: the prompt estimate plus the reserved output."""
        if est is None:
            return 0
        return est.prompt_tokens + self._reserved_output(est)

    def charge(self, est: Estimate | None, input_tokens: int, output_tokens: int) -> int:
        """Tokens charged once usage is known: reported input plus output, where ``reserve_output="max"``
        keeps the reserved output charged (OpenAI counts ``max_tokens`` at admission and does not refund it)."""
        reserved_output = self._reserved_output(est) if est is not None else 0
        if self.config.reserve_output == "max":
            return input_tokens + max(output_tokens, reserved_output)
        return input_tokens + output_tokens

    def _reserved_output(self, est: Estimate) -> int:
        if self.config.reserve_output == "predicted" and est.predicted_output_tokens is not None:
            return int(est.predicted_output_tokens)
        return int(est.max_output_tokens or 0)

    def flow(self, ctx: CallContext) -> Flow:
        """The attempt loop as a generator of effects; returns the successful attempt."""
        key: LimiterKey = ctx.limiter_key
        tokens = ctx.reserve_tokens
        if self.cost.ledger is not None:
            yield from self._admit_budget(ctx)
        # the call's wait budget bounds its waits for capacity: admissions and the delays after 429s
        state = self.retry.start(key.id, ctx.route, ctx.model, wait_budget=self.limiter.config.max_wait_seconds)
        ctx.history = state.history
        attempt = 0
        while True:
            attempt += 1
            # An open circuit: wait (bounded, sending nothing) for its probe window, or fail fast with
            # CircuitOpenError past the bound -- before reserving any capacity.
            while (wait := state.before_attempt()) > 0:
                self.recorder.backoff(ctx, attempt=attempt - 1, delay_seconds=wait, reason="circuit_open")
                yield Sleep(wait)
            try:
                reservation: Reservation = yield Reserve(key.budgeted(state.wait_left), tokens)
            except BaseException as exc:  # refused capacity or cancelled while waiting: free a half-open probe slot
                state.on_cancel(sent=False)
                if isinstance(exc, (ThrottleTimeout, RequestTooLarge)):
                    self.recorder.throttled(
                        ctx, decision=n.DECISION_REFUSED,
                        reason=exc.reason if isinstance(exc, ThrottleTimeout) else "too_large",
                        wait_seconds=exc.needed_seconds if isinstance(exc, ThrottleTimeout) else 0.0, tokens=tokens,
                    )
                if isinstance(exc, ThrottleTimeout) and (refused := state.throttle_error(exc)) is not exc:
                    attach_history(refused, state.history)  # after 429s: "rate limited, waited N s" (caused by the 429)
                    raise refused from refused.__cause__
                raise
            state.admitted(reservation.wait_seconds)
            ctx.reservation = reservation
            self.recorder.throttled(
                ctx, decision=reservation.decision, reason=reservation.reason,
                wait_seconds=reservation.wait_seconds, tokens=tokens,
            )
            span = self.recorder.start_attempt(ctx, attempt)
            try:
                sent: Sent = yield Send(ctx.options)
            except Exception as exc:
                decision = state.on_failure(exc)
                failure = decision.failure
                self.recorder.end_attempt(
                    ctx, span, outcome="retryable" if failure.retryable else "terminal", reason=failure.reason,
                    status=failure.status, error_type=failure.error_type, request_id=failure.request_id,
                )
                self._after_failure(ctx, key, reservation, exc, failure)
                if decision.retry:
                    self.recorder.backoff(ctx, attempt=attempt, delay_seconds=decision.delay_seconds,
                                          reason=failure.reason)
                    if decision.delay_seconds > 0:
                        yield Sleep(decision.delay_seconds)
                    continue
                error = decision.error or exc
                attach_history(error, state.history)
                if error is not exc:
                    raise error from exc
                raise
            except BaseException:  # CancelledError, KeyboardInterrupt, flow closed: no verdict, free the probe slot
                state.on_cancel()
                self.recorder.end_attempt(ctx, span, outcome="terminal", reason="cancelled")
                raise
            state.on_success()
            # A streamed response's attempt span stays open until its body ends (the observer ends it).
            self.recorder.end_attempt(ctx, span, outcome="success", reason="ok", status=sent.status_code,
                                      request_id=sent.request_id,
                                      keep_open=ctx.stream and (ctx.observer is not None or ctx.parent is not None))
            self.limiter.learn(key, sent.headers, reservation)
            return sent

    def _admit_budget(self, ctx: CallContext) -> Generator[Effect, Any, None]:
        """Reserve the request's worst-case cost against its budgets (once per request, before any attempt):
        wait for a period to roll over within the budget's wait, or fail with ``BudgetExceeded``."""
        while True:
            try:
                decision = yield Budget(ctx)
            except BudgetExceeded as exc:
                self.recorder.budget_refused(ctx, exc)
                raise
            if isinstance(decision, BudgetWait):
                self.recorder.backoff(ctx, attempt=0, delay_seconds=decision.seconds, reason="budget")
                yield Sleep(decision.seconds)
                continue
            ctx.budget = decision
            if decision is not None:
                self.recorder.budget_admitted(ctx, decision)
            return

    def _decide_budget(self, ctx: CallContext) -> Any:
        est = ctx.estimate
        return self.cost.decide(self.key_hash(ctx.request.api_key), ctx.model, ctx.tags,
                                est.prompt_tokens if est is not None else 0,
                                est.max_output_tokens if est is not None else None)

    def _after_failure(
        self, ctx: CallContext, key: LimiterKey, reservation: Reservation, exc: BaseException, failure: Any
    ) -> None:
        headers = compat.headers_of(exc)
        if failure.reason == "rate_limit":
            resource = failure.rate_limit_resource
            self.recorder.rate_limited_response(ctx, resource or "unknown")
            self.limiter.on_rate_limited(key, resource, failure.retry_after_seconds, headers or {}, reservation)
            self.limiter.release(reservation)  # a refused request was not charged upstream
        elif failure.status is None and failure.reason == "connection":
            self.limiter.release(reservation)  # never reached the server
        elif headers is not None:
            self.limiter.learn(key, headers, reservation)

    def deliver(self, ctx: CallContext, sent: Sent) -> Any:
        """What the caller receives: a plain result ends the call now; a stream carries the call to its end."""
        result = sent.result
        if not ctx.stream:
            self.complete(ctx, result, sent.raw)
            return result
        observer = ctx.observer
        if observer is not None and observer.claimed:
            return result
        self.recorder.end_stream_attempt(ctx)
        if observer is not None and ctx.request.wants_raw_response:
            # The caller holds the raw response and builds the stream from it later (``parse()``); if it
            # never does, the call ends as abandoned when the response is collected.
            weakref.finalize(sent.raw, observer.abandon_unclaimed)
            return result
        # A stream class that cannot be observed (a caller's own, not a Stream): the call ends with its headers.
        self.complete(ctx, None)
        return result

    def complete(self, ctx: CallContext, result: Any, raw: Any = None) -> None:
        """Read the usage of a finished non-streamed call, settle it and end it (once)."""
        if ctx.ended:
            return
        if result is not None:
            self._read_result(ctx, result, raw)
        self.settle(ctx)
        self.recorder.end_call(ctx)

    def settle(self, ctx: CallContext, resumed: Sequence[CallContext] = ()) -> None:
        """Settle a call's reservations once: the last request's against the reported usage, with
        :meth:`charge`; the reservations of requests that broke stay charged (the upstream counted them);
        without reported usage the reservation stands as charged. Then price every request (:meth:`_price`)."""
        if ctx.settled:
            return
        ctx.settled = True
        for child in resumed:
            child.settled = True
        last = resumed[-1] if resumed else ctx
        try:
            if last.reservation is not None and ctx.input_tokens is not None:
                actual = self.charge(last.estimate, ctx.input_tokens, ctx.output_tokens or 0)
                self.limiter.settle(last.reservation, actual)
                self.recorder.settled(ctx, actual)
                if not resumed and ctx.output_tokens is not None and ctx.operation != "embeddings":
                    est = ctx.estimate
                    self.predictor.observe(ctx.model, ctx.operation, est.max_output_tokens if est else None,
                                           ctx.output_tokens)
        except Exception as exc:
            self.recorder.telemetry_error("settle", exc)
        self._price(ctx, [ctx, *resumed])

    def _price(self, ctx: CallContext, requests: Sequence[CallContext]) -> None:
        """The call's cost from what was reported: the last request's usage; a request that broke reported
        none, so it is priced from its prompt count and the output tokens it delivered (what it consumed)."""
        model = ctx.response_model or ctx.model
        try:
            parts: list[Cost | Unpriced] = []
            for i, request in enumerate(requests):
                if i == len(requests) - 1 and request.received_tokens is None:
                    usage = ctx.usage
                else:
                    est = request.estimate
                    usage = Usage(est.prompt_tokens if est is not None else 0, request.received_tokens or 0)
                parts.append(self.cost.settle(request.budget, model, usage, tags=ctx.tags))
            unpriced = [p for p in parts if isinstance(p, Unpriced)]
            if unpriced:
                ctx.cost = unpriced[0]
            else:
                total = parts[0]
                for part in parts[1:]:
                    total = total + part  # type: ignore[operator]
                ctx.cost = total
        except Exception as exc:
            self.recorder.telemetry_error("cost", exc)

    def _read_result(self, ctx: CallContext, result: Any, raw: Any) -> None:
        usage = usage_from(result)
        inp, out = (usage.input_tokens, usage.output_tokens) if usage is not None else (None, None)
        if usage is None:
            data = read_json_body(raw) if raw is not None else None
            if data is not None:  # a raw-response path: the parsed object is the caller's to build
                usage = usage_from(data)
                inp, out = usage_from_json(data)
                model, rid = data.get("model"), data.get("id")
                ctx.response_model = model if isinstance(model, str) else None
                ctx.response_id = rid if isinstance(rid, str) else None
        else:
            model = getattr(result, "model", None)
            ctx.response_model = model if isinstance(model, str) else None
            rid = getattr(result, "id", None)
            ctx.response_id = rid if isinstance(rid, str) else None
            choices = getattr(result, "choices", None)
            if isinstance(choices, list) and choices:
                ctx.finish_reasons = [str(c.finish_reason) for c in choices if getattr(c, "finish_reason", None)]
        ctx.usage = usage
        ctx.input_tokens = inp
        ctx.output_tokens = out

    def fail(self, ctx: CallContext, error: BaseException) -> None:
        """End a call that failed before or during its attempts (its limiter reservation stays charged).

        Its budget reservation is released when no request can have been billed (refused before sending,
        an HTTP error answer); otherwise (a timeout, a broken response) it stays charged at its worst case."""
        if isinstance(error, MiddlewareError) and not getattr(error, "middleware_attempts", None):
            attach_history(error, ctx.history)
        ctx.settled = True
        if ctx.budget is not None:
            try:
                if not ctx.history or classify(error).status is not None:
                    self.cost.release(ctx.budget)
                else:
                    self.cost.settle(ctx.budget, ctx.model, None, tags=ctx.tags)
            except Exception as exc:
                self.recorder.telemetry_error("cost", exc)
        self.recorder.end_call(ctx, error)

    def _resumption(self, ctx: CallContext, plan: ResumePlan) -> CallContext:
        """The child context of a resumed request: same span and limiter key, its own estimate and reservation."""
        if plan.kind == "chat" and plan.body is not None:
            request = ctx.request.continuation(plan.body)
        elif plan.response_id is not None and plan.starting_after is not None:
            request = ctx.request.responses_resume(plan.response_id, plan.starting_after)
        else:
            raise MiddlewareError(f"cannot resume a {plan.kind} stream without a body or a cursor")
        child = ctx.child(request)
        _, idle = attempt_changes(self.streaming.config, child, request)
        child.options = request.with_options(idle_timeout=idle)
        child.reserve_tokens = self.estimate(child, record=False)
        if ctx.observer is not None:
            ctx.observer.adopt(child)
        return child

    # ------------------------------------------------------------------ drivers
    def _drive_sync(self, ctx: CallContext, gen: Flow) -> Sent:
        """Carry out the flow's effects with blocking waits and I/O."""
        value: Any = None
        error: BaseException | None = None
        request: SdkRequest = ctx.request
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                sent: Sent = stop.value
                return sent
            error = None
            try:
                if isinstance(effect, Send):
                    value = request.send(effect.options, ctx.observer)
                elif isinstance(effect, Reserve):
                    value = self.limiter.reserve(effect.key, effect.tokens)
                elif isinstance(effect, Budget):
                    value = self._decide_budget(effect.ctx)
                else:
                    time.sleep(effect.seconds)
                    value = None
            except Exception as exc:
                error = exc
            except BaseException:  # KeyboardInterrupt...: let the flow release what the attempt holds
                gen.close()
                raise

    async def _drive_async(self, ctx: CallContext, gen: Flow) -> Sent:
        """Carry out the flow's effects with asyncio waits and I/O."""
        value: Any = None
        error: BaseException | None = None
        request: SdkRequest = ctx.request
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                sent: Sent = stop.value
                return sent
            error = None
            try:
                if isinstance(effect, Send):
                    value = await request.asend(effect.options, ctx.observer)
                elif isinstance(effect, Reserve):
                    value = await self.limiter.reserve_async(effect.key, effect.tokens)
                elif isinstance(effect, Budget):  # a shared ledger answers over the network: off the event loop
                    shared = self.cost.ledger is not None and self.cost.ledger.shared
                    value = await asyncio.to_thread(self._decide_budget, effect.ctx) if shared \
                        else self._decide_budget(effect.ctx)
                else:
                    await asyncio.sleep(effect.seconds)
                    value = None
            except Exception as exc:
                error = exc
            except BaseException:  # asyncio.CancelledError...: let the flow release what the attempt holds
                with contextlib.suppress(Exception):
                    gen.close()
                raise
