"""The stage sequence of one protected call: estimate, admit, attempt loop, (stream), settle.

The decisions are written once, as a generator that yields *effects* (reserve capacity, send an
attempt, sleep); a sync driver and an async driver carry the effects out. So sync and async calls
share one implementation of every decision; only the waiting and the I/O differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .config import Config
from .context import OPERATION_FOR_ROUTE, CallContext
from .errors import MiddlewareError, RequestTooLarge, ThrottleTimeout, attach_history
from .limits import Limiter, LimiterKey, Reservation
from .retry import RetryController
from .streaming.services import StreamingServices
from .telemetry import names as n
from .telemetry.recorder import Recorder
from .tokens import OutputPredictor, TokenEstimator, max_output_tokens

# The call whose attempt is being sent right now (read by the protected client's response hook).
CURRENT_CALL: ContextVar[CallContext | None] = ContextVar("middleware_current_call", default=None)


@dataclass(frozen=True)
class Send:
    """Effect: send one attempt with these options."""

    options: Any


@dataclass(frozen=True)
class Sleep:
    """Effect: wait this long (backoff, or an open circuit)."""

    seconds: float


@dataclass(frozen=True)
class Reserve:
    """Effect: reserve limiter capacity (may wait)."""

    key: LimiterKey
    tokens: int


Effect = Send | Sleep | Reserve
Flow = Generator[Effect, Any, Any]


def route_of(options: Any) -> str | None:
    """The routed endpoint of a request ("/chat/completions", "/responses", "/embeddings"), else None."""
    if getattr(options, "method", "").lower() != "post":
        return None
    url = getattr(options, "url", "")
    if not isinstance(url, str):
        return None
    return url if url in OPERATION_FOR_ROUTE else None


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
    return inp, out


def usage_from_json(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens from a JSON body."""
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens"))
    return (inp if isinstance(inp, int) else None), (out if isinstance(out, int) else None)


class Pipeline:
    """Runs one call through estimate, admit, attempt loop and settle, reporting to one Recorder."""

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
        self.limiter = limiter or Limiter(config.limits, events=recorder)
        self.retry = retry or RetryController.from_config(config.retry, events=recorder)
        self._key_prefix_cache: dict[str, str] = {}
        self.streaming = StreamingServices(config.streaming, recorder)

    # ------------------------------------------------------------------ stages
    def limiter_key(self, api_key: str, model: str) -> LimiterKey:
        """A hash of the API key plus the model (or '*' when one budget is shared across models)."""
        prefix = self._key_prefix_cache.get(api_key)
        if prefix is None:
            prefix = hashlib.sha256(api_key.encode()).hexdigest()[:12]
            self._key_prefix_cache[api_key] = prefix
        scope = "*" if self.config.limiter_scope == "shared" else model
        return LimiterKey(id=f"{prefix}:{scope}", model=model)

    def begin(self, route: str, body: dict[str, Any], *, server: tuple[str | None, int | None]) -> CallContext:
        """Open the call: its span and context."""
        operation = OPERATION_FOR_ROUTE[route]
        model = body.get("model")
        model_name = model if isinstance(model, str) and model else "unknown"
        stream = body.get("stream") is True
        ctx = self.recorder.start_call(
            operation, route, model_name, body, stream=stream, server_address=server[0], server_port=server[1]
        )
        ctx.pipeline = self
        return ctx

    def estimate(self, ctx: CallContext) -> int:
        """Estimate the call's tokens; return what to reserve."""
        est_max = None
        predicted = None
        try:
            est_max = max_output_tokens(ctx.operation, ctx.body)
            predicted = self.predictor.predict(ctx.model, ctx.operation, est_max)
        except Exception as exc:
            self.recorder.telemetry_error("predict", exc)
        est = self.estimator.estimate(ctx.operation, ctx.model, ctx.body, predicted_output=predicted)
        self.recorder.estimate(ctx, est)
        ctx.estimate = est
        return est.prompt_tokens + self._reserved_output(est)

    def _reserved_output(self, est: Any) -> int:
        if self.config.reserve_output == "predicted" and est.predicted_output_tokens is not None:
            return int(est.predicted_output_tokens)
        return int(est.max_output_tokens or 0)

    def flow(self, ctx: CallContext, key: LimiterKey, tokens: int, options: Any) -> Flow:
        """The attempt loop as a generator of effects; returns the successful attempt's result."""
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
            ctx.headers = None
            token = CURRENT_CALL.set(ctx)
            try:
                result = yield Send(options)
            except Exception as exc:
                CURRENT_CALL.reset(token)
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
                with contextlib.suppress(ValueError):  # closed from another context (garbage collection)
                    CURRENT_CALL.reset(token)
                raise
            CURRENT_CALL.reset(token)
            state.on_success()
            headers = getattr(ctx, "headers", None)
            request_id = headers.get("x-request-id") if headers is not None else None
            self.recorder.end_attempt(ctx, span, outcome="success", reason="ok", status=ctx.status_code,
                                      request_id=request_id)
            if headers is not None:
                self.limiter.learn(key, headers, reservation)
            return result

    def _after_failure(
        self, ctx: CallContext, key: LimiterKey, reservation: Reservation, exc: BaseException, failure: Any
    ) -> None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if failure.reason == "rate_limit":
            resource = failure.rate_limit_resource
            self.recorder.rate_limited_response(ctx, resource or "unknown")
            self.limiter.on_rate_limited(key, resource, failure.retry_after_seconds, headers or {}, reservation)
            self.limiter.release(reservation)  # a refused request was not charged upstream
        elif failure.status is None and failure.reason == "connection":
            self.limiter.release(reservation)  # never reached the server
        elif headers is not None:
            self.limiter.learn(key, headers, reservation)

    def complete(self, ctx: CallContext, result: Any, error: BaseException | None = None) -> None:
        """Settle the reservation against reported usage, teach the predictor, end the call (once)."""
        if ctx.ended:
            return
        if result is not None and error is None:
            self._read_result(ctx, result)
        self.settle(ctx)
        self.recorder.end_call(ctx, error)

    def settle(self, ctx: CallContext) -> None:
        """Settle the limiter reservation and feed the output predictor (once per call)."""
        if ctx.settled or ctx.reservation is None:
            return
        ctx.settled = True
        est = ctx.estimate
        try:
            if ctx.input_tokens is None:
                return  # no usage reported: the reservation stands as charged
            reserved_output = self._reserved_output(est) if est is not None else 0
            output = ctx.output_tokens or 0
            charged_output = max(output, reserved_output) if self.config.reserve_output == "max" else output
            actual = ctx.input_tokens + charged_output
            self.limiter.settle(ctx.reservation, actual)
            self.recorder.settled(ctx, actual)
            if ctx.output_tokens is not None and ctx.operation != "embeddings":
                max_out = est.max_output_tokens if est is not None else None
                self.predictor.observe(ctx.model, ctx.operation, max_out, ctx.output_tokens)
        except Exception as exc:
            self.recorder.telemetry_error("settle", exc)

    def _read_result(self, ctx: CallContext, result: Any) -> None:
        inp, out = usage_of(result)
        if inp is None and out is None:
            http = getattr(result, "http_response", None)
            if http is not None and getattr(http, "is_stream_consumed", True) and not ctx.stream:
                try:
                    data = json.loads(http.content)
                    if isinstance(data, Mapping):
                        inp, out = usage_from_json(data)
                        ctx.response_model = data.get("model") if isinstance(data.get("model"), str) else None
                        ctx.response_id = data.get("id") if isinstance(data.get("id"), str) else None
                except Exception:
                    pass
        else:
            model = getattr(result, "model", None)
            ctx.response_model = model if isinstance(model, str) else None
            rid = getattr(result, "id", None)
            ctx.response_id = rid if isinstance(rid, str) else None
            choices = getattr(result, "choices", None)
            if choices:
                ctx.finish_reasons = [str(c.finish_reason) for c in choices if getattr(c, "finish_reason", None)]
        ctx.input_tokens = inp
        ctx.output_tokens = out

    # ------------------------------------------------------------------ drivers
    def run_sync(self, ctx: CallContext, key: LimiterKey, tokens: int, options: Any,
                 send: Callable[[Any], Any]) -> Any:
        """Drive the flow with blocking waits and I/O."""
        gen = self.flow(ctx, key, tokens, options)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            error = None
            try:
                if isinstance(effect, Send):
                    value = send(effect.options)
                elif isinstance(effect, Reserve):
                    value = self.limiter.reserve(effect.key, effect.tokens)
                else:
                    time.sleep(effect.seconds)
                    value = None
            except Exception as exc:
                error = exc
            except BaseException:  # KeyboardInterrupt...: let the flow release what the attempt holds
                gen.close()
                raise

    async def run_async(self, ctx: CallContext, key: LimiterKey, tokens: int, options: Any,
                        send: Callable[[Any], Awaitable[Any]]) -> Any:
        """Drive the flow with asyncio waits and I/O."""
        gen = self.flow(ctx, key, tokens, options)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            error = None
            try:
                if isinstance(effect, Send):
                    value = await send(effect.options)
                elif isinstance(effect, Reserve):
                    value = await self.limiter.reserve_async(effect.key, effect.tokens)
                else:
                    await asyncio.sleep(effect.seconds)
                    value = None
            except Exception as exc:
                error = exc
            except BaseException:  # asyncio.CancelledError...: let the flow release what the attempt holds
                gen.close()
                raise

    def fail(self, ctx: CallContext, error: BaseException) -> None:
        """End a call that failed before or during its attempts."""
        if isinstance(error, MiddlewareError) and not getattr(error, "middleware_attempts", None):
            attach_history(error, ctx.history)
        if ctx.reservation is not None and not ctx.settled:
            ctx.settled = True  # the reservation stays charged: the upstream may have counted it
        self.recorder.end_call(ctx, error)
