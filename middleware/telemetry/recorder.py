"""The Recorder: the only object that touches OpenTelemetry and the Prometheus exposition.

Pipeline stages report domain events (``throttled``, ``end_attempt``, ``stream_chunks`` ...); the
recorder turns each into a span, a span event, metric samples and, where a person would want to read
it later, one structured log record. Every public method is guarded: a telemetry failure is counted
and logged once and never raises into the call.

Cost discipline (this runs on every call and every chunk):

- each metric update touches one cell of our own store (``instruments.py``), exposed to Prometheus and
  OpenTelemetry from there, never written twice;
- span events and their attribute dicts are built only when the span is recording (sampled);
- a log record is built only when the ``middleware`` logger is enabled for its level;
- message content, and upstream error messages (which may echo a prompt), reach spans only when content
  capture is on (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry

from .._version import __version__
from ..context import CallContext
from ..cost.attributes import budget_attributes, cost_attributes, tag_attributes
from . import names as n
from .instruments import Instruments
from .logs import CallLog

log = logging.getLogger("middleware.telemetry")

P = ParamSpec("P")
R = TypeVar("R")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
SLOW_THROTTLE_ENV = "MIDDLEWARE_LOG_SLOW_THROTTLE_SECONDS"
# Events kept free on every call span for estimate, throttle, backoff, stall, resume and summary events.
RESERVED_SPAN_EVENTS = 16
# Chunk span events: the first CHUNK_EVENTS_FIRST chunks, then every CHUNK_EVENTS_EVERY-th, then the last
# (within the span's event limit), then one summary event with the count of chunks without an event.
CHUNK_EVENTS_FIRST = 10
CHUNK_EVENTS_EVERY = 50
TRACER_NAME = "middleware"  # the instrumentation scope of our spans and metrics

# OpenTelemetry's own openai instrumentation ("openai-v2") records these two GenAI metrics for the calls it wraps.
# While it is on, their OTel instruments are its alone: ours record them on the Prometheus side only (/metrics),
# so that no OTel metric name carries two meanings. See docs/architecture.md ("Next to openai-v2").
OPENAI_V2_MODULE = "opentelemetry.instrumentation.openai_v2"
SHARED_WITH_OPENAI_V2 = (n.OPERATION_DURATION, n.TOKEN_USAGE)


def openai_v2_active() -> bool:
    """True while OpenTelemetry's openai-v2 instrumentation is instrumenting this process (never imports it)."""
    module = sys.modules.get(OPENAI_V2_MODULE)
    if module is None:
        return False
    instrumentor = getattr(getattr(module, "OpenAIInstrumentor", None), "_instance", None)  # BaseInstrumentor's
    return getattr(instrumentor, "is_instrumented_by_opentelemetry", False) is True


def call_span_kind() -> SpanKind:
    """Kind of a new call span: INTERNAL under another instrumentation's GenAI client span (openai-v2 wraps
    ``create()`` one layer above our funnel, and that span already is the client call), CLIENT otherwise."""
    parent = trace.get_current_span()
    if not parent.is_recording() or getattr(parent, "kind", None) is not SpanKind.CLIENT:
        return SpanKind.CLIENT
    attributes = getattr(parent, "attributes", None)
    scope = getattr(getattr(parent, "instrumentation_scope", None), "name", TRACER_NAME)
    if isinstance(attributes, Mapping) and n.A_OPERATION in attributes and scope != TRACER_NAME:
        return SpanKind.INTERNAL
    return SpanKind.CLIENT


class _Attempt:
    """An attempt whose span is made when it ends: its start time, number and (streams) the attributes so far."""

    __slots__ = ("attempt", "attributes", "start_ns")

    def __init__(self, start_ns: int, attempt: int) -> None:
        self.start_ns = start_ns
        self.attempt = attempt
        self.attributes: dict[str, Any] | None = None


def _guarded(default: Any = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: swallow and count any exception raised by a recorder method."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                recorder = args[0]
                if isinstance(recorder, Recorder):
                    recorder.telemetry_error(fn.__name__, exc)
                return default  # type: ignore[no-any-return]

        return inner

    return wrap


class ModelLabels:
    """Folds model names into a bounded label set: beyond ``cap`` distinct models, ``other``.

    One per Prometheus registry (``labels_for``), so the cap holds for the whole exposition however many
    protected clients and pipelines record into it.
    """

    def __init__(self, cap: int = 50) -> None:
        self.cap = cap
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()
        self.folded = 0

    def label(self, model: str) -> str:
        """The label value for a model name."""
        known = self._known.get(model)
        if known is not None:
            return known
        with self._lock:
            if model in self._known:
                return self._known[model]
            if len(self._known) >= self.cap:
                self.folded += 1
                return n.OTHER_MODEL
            clean = model.strip()[:64] or "unknown"
            self._known[model] = clean
            return clean

    def known(self) -> dict[str, str]:
        """Model -> label for every model given its own label."""
        return dict(self._known)


_MODEL_LABELS: dict[int, ModelLabels] = {}
_MODEL_LABELS_LOCK = threading.Lock()


def labels_for(store: object, cap: int) -> ModelLabels:
    """The model folding of one metric store (created by its first recorder, with that recorder's cap)."""
    with _MODEL_LABELS_LOCK:
        labels = _MODEL_LABELS.get(id(store))
        if labels is None:
            labels = _MODEL_LABELS[id(store)] = ModelLabels(cap)
        return labels


_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")


def _error_code(error: BaseException, secret: str | None = None) -> str | None:
    """The upstream's error code or type (``insufficient_quota``, ``rate_limit_exceeded``), never its message.

    Only identifier-like values pass (a letter, then letters, digits, ``_`` or ``.``; at most 4 digits): an
    upstream that echoes the prompt or a credential into ``code`` does not get it onto spans.
    """
    for attr in ("code", "type"):
        value = getattr(error, attr, None)
        if isinstance(value, str) and _ERROR_CODE.fullmatch(value) and sum(c.isdigit() for c in value) <= 4 \
                and not (secret and secret in value):
            return value
    return None


def _secret(ctx: CallContext) -> str | None:
    """The call's API key, to keep out of what the recorder writes (None when too short to look for)."""
    request = ctx.request
    key = getattr(request, "api_key", None) if request is not None else None
    return key if isinstance(key, str) and len(key) >= 8 else None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret and secret in text else text


class Recorder:
    """Domain-level telemetry for every stage of the pipeline and its components."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
        model_label_cap: int = 50,
        max_chunk_events: int | None = None,
        slow_throttle_seconds: float | None = None,
    ) -> None:
        """``slow_throttle_seconds``: limiter waits from this long get an INFO log record (None reads
        ``MIDDLEWARE_LOG_SLOW_THROTTLE_SECONDS``, default 1 s; a value not allowed raises ``ConfigError``)."""
        self.registry = registry if registry is not None else REGISTRY
        # A provider, tracer, meter or registry that fails leaves that side off (counted once the store exists):
        # building a recorder (and so protect()) never raises because of telemetry.
        failures: list[tuple[str, BaseException]] = []
        try:
            self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)
        except Exception as exc:
            failures.append(("tracer", exc))
            self.tracer = trace.NoOpTracer()
        provider: Any = meter_provider or otel_metrics.get_meter_provider()
        try:
            meter = provider.get_meter(TRACER_NAME, __version__)
        except Exception as exc:
            failures.append(("meter", exc))
            provider, meter = None, otel_metrics.NoOpMeter(TRACER_NAME)
        self.m = m = Instruments(self.registry, provider, meter, explicit_provider=meter_provider is not None)
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")
        self.capture_content = capture_content
        self.models = labels_for(m.store, model_label_cap)
        self._max_chunk_events = max_chunk_events
        self._warned: set[str] = set()
        self.telemetry_errors = 0
        if slow_throttle_seconds is None:
            from ..config import read_env

            slow_throttle_seconds = float(read_env(SLOW_THROTTLE_ENV))
        for component, failure in (*failures, *m.failures):
            self.telemetry_error(component, failure)
        self.logs = CallLog(slow_throttle_seconds)
        # The instruments of the per-call path, bound once.
        self._inflight = m[n.INFLIGHT]
        self._requests = m[n.REQUESTS]
        self._duration = m[n.OPERATION_DURATION]
        self._usage = m[n.TOKEN_USAGE]
        self._estimates = m[n.TOKEN_ESTIMATES]
        self._estimated = m[n.ESTIMATED_TOKENS]
        self._decisions = m[n.THROTTLE_DECISIONS]
        self._wait = m[n.THROTTLE_WAIT]
        self._reserved = m[n.TOKENS_RESERVED]
        self._settled = m[n.TOKENS_SETTLED]
        self._attempts = m[n.ATTEMPTS]
        self._error_ratio = m[n.ESTIMATE_ERROR]
        self._bias = m[n.ESTIMATE_BIAS_TOKENS]
        self._chunks = m[n.STREAM_CHUNKS]
        self._per_chunk = m[n.TIME_PER_OUTPUT_CHUNK]
        from .setup import register_recorder

        register_recorder(self)

    # ------------------------------------------------------------------ plumbing
    def telemetry_error(self, component: str, exc: BaseException | None = None, *, logged: bool = False) -> None:
        """Count a telemetry failure and log it once per component (never raises).

        ``logged``: the failure was logged already (a Redis outage: once, by ``middleware.redisconn``)."""
        try:
            self.telemetry_errors += 1
            self.m[n.TELEMETRY_ERRORS].add((component,))
            if not logged and component not in self._warned:
                self._warned.add(component)
                log.warning("telemetry failure in %s (further ones are counted, not logged): %r", component, exc)
        except Exception:
            pass

    def model_label(self, model: str) -> str:
        """Bounded label value for a model (never raises: ``other`` on any failure)."""
        try:
            models = self.models
            before = models.folded
            label = models.label(model)
            if models.folded != before:
                self.m[n.MODELS_FOLDED].add(())
            return label
        except Exception as exc:
            self.telemetry_error("model_label", exc)
            return n.OTHER_MODEL

    def chunk_event_limit(self, ctx: CallContext) -> int:
        """How many chunk span events fit on this call's span (its event limit minus room for the others)."""
        if self._max_chunk_events is not None:
            return self._max_chunk_events
        if not ctx.recording:
            return 0
        try:
            max_events = getattr(getattr(ctx.span, "_limits", None), "max_events", None)
        except Exception as exc:  # a span whose attributes raise: no chunk events
            self.telemetry_error("span", exc)
            return 0
        if isinstance(max_events, int) and max_events > 0:
            return max(0, max_events - RESERVED_SPAN_EVENTS)
        return 0

    @staticmethod
    def _exemplar(ctx: CallContext) -> dict[str, str] | None:
        return {n.EXEMPLAR_TRACE_ID: ctx.trace_id} if ctx.trace_id else None

    def _event(self, ctx: CallContext, name: str, attributes: Mapping[str, Any]) -> None:
        """A span event when the call span records; a span that fails is counted, and the caller's metrics go on."""
        if ctx.recording:
            try:
                ctx.span.add_event(name, attributes)
            except Exception as exc:
                self.telemetry_error("span", exc)

    # ------------------------------------------------------------------ call lifecycle
    def start_call(
        self,
        operation: str,
        route: str,
        model: str,
        body: dict[str, Any],
        *,
        stream: bool,
        server_address: str | None = None,
        server_port: int | None = None,
    ) -> CallContext:
        """Open the call span ``{operation} {model}`` (kind CLIENT) and return the call's context.

        Never raises: a tracer or instrument that fails leaves the call with a non-recording span.
        """
        span: Any = trace.INVALID_SPAN
        try:
            attributes: dict[str, Any] = {
                n.A_OPERATION: operation, n.A_PROVIDER: n.PROVIDER_NAME, n.A_REQUEST_MODEL: model,
                n.A_REQUEST_STREAM: stream,
            }
            if server_address:
                attributes[n.A_SERVER_ADDRESS] = server_address
            if server_port:
                attributes[n.A_SERVER_PORT] = server_port
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
            if isinstance(max_tokens, int):
                attributes[n.A_REQUEST_MAX_TOKENS] = max_tokens
            span = self.tracer.start_span(
                n.SPAN_CALL.format(operation=operation, model=model), kind=call_span_kind(), attributes=attributes)
        except Exception as exc:  # a broken tracer provider must not break the call
            self.telemetry_error("tracer", exc)
            span = trace.INVALID_SPAN
        ctx = CallContext(operation=operation, route=route, model=model, model_label=self.model_label(model),
                          body=body, stream=stream, span=span)
        try:
            ctx.recording = span.is_recording()
            sc = span.get_span_context()
            if sc.is_valid and sc.trace_flags.sampled:
                ctx.trace_id = format(sc.trace_id, "032x")
                ctx.span_id = format(sc.span_id, "016x")
            if self.capture_content and ctx.recording:
                content = body.get("messages") or body.get("input")
                if content is not None:
                    span.set_attribute(n.A_INPUT_MESSAGES, json.dumps(content, default=str)[:65536])
        except Exception as exc:  # the span fails: the call goes on, its metrics too
            self.telemetry_error("span", exc)
        try:
            self.m.gate.refresh()
            self._inflight.delta((operation,), 1)
        except Exception as exc:
            self.telemetry_error("start_call", exc)
        return ctx

    @_guarded()
    def estimate(self, ctx: CallContext, estimate: Any) -> None:
        """The token estimate made before the call (a span event and metrics)."""
        ctx.estimate = estimate
        if ctx.recording:
            attrs: dict[str, Any] = {n.A_ESTIMATOR: estimate.estimator, n.A_EST_PROMPT_TOKENS: estimate.prompt_tokens}
            if estimate.max_output_tokens is not None:
                attrs[n.A_EST_MAX_OUTPUT_TOKENS] = estimate.max_output_tokens
            if estimate.predicted_output_tokens is not None:
                attrs[n.A_EST_PREDICTED_OUTPUT_TOKENS] = estimate.predicted_output_tokens
            self._event(ctx, n.E_ESTIMATE, attrs)
            if estimate.estimator != "tiktoken":  # the call's estimate came (partly) from the documented fallback
                degraded: dict[str, Any] = {n.A_ESTIMATOR: estimate.estimator}
                if getattr(estimate, "fallback", ()):  # the body parts the rules could not read (closed reason codes)
                    degraded[n.A_REASON] = list(estimate.fallback)
                self._event(ctx, n.E_TELEMETRY_DEGRADED, degraded)
        model = ctx.model_label
        self._estimates.add((model, ctx.operation, estimate.estimator))
        hist = self._estimated
        hist.observe((model, n.TOKEN_INPUT, n.ESTIMATE_PROMPT), estimate.prompt_tokens)
        if estimate.max_output_tokens is not None:
            hist.observe((model, n.TOKEN_OUTPUT, n.ESTIMATE_MAX_OUTPUT), estimate.max_output_tokens)
        if estimate.predicted_output_tokens is not None:
            hist.observe((model, n.TOKEN_OUTPUT, n.ESTIMATE_PREDICTED_OUTPUT), estimate.predicted_output_tokens)

    @_guarded()
    def throttled(self, ctx: CallContext, *, decision: str, reason: str, wait_seconds: float, tokens: int) -> None:
        """A limiter decision for this call: admitted at once, waited, or refused."""
        if decision == n.DECISION_REFUSED:
            log = self.logs.enabled(logging.WARNING)
        else:
            log = wait_seconds >= self.logs.slow_throttle_seconds and self.logs.enabled(logging.INFO)
        if ctx.recording or log:
            attrs: dict[str, Any] = {
                n.A_DECISION: decision, n.A_REASON: reason, n.A_WAIT_SECONDS: wait_seconds,
                n.A_RESERVED_TOKENS: tokens, n.A_LIMITER_KEY: ctx.limiter_key.id if ctx.limiter_key else "",
            }
            self._event(ctx, n.E_THROTTLE, attrs)
            if log:
                self.logs.throttled(ctx, attrs, decision, reason, wait_seconds)
        model = ctx.model_label
        self._decisions.add((model, decision, reason))
        if decision != n.DECISION_REFUSED:
            self._wait.observe((model,), wait_seconds, self._exemplar(ctx))
            self._reserved.add((model,), tokens)

    def start_attempt(self, ctx: CallContext, attempt: int) -> Any:
        """Begin one HTTP attempt: its start time and number (``http.request.resend_count`` = attempt - 1).

        The attempt's span is made once, when the attempt ends (:meth:`end_attempt`, or for a streamed response
        :meth:`end_stream_attempt`), with its real start time and all its attributes in one go: one attribute
        set and one span creation per attempt instead of a creation, later attribute and status updates and an
        end. Nothing is made for a call that is not sampled.
        """
        if not ctx.recording:
            return None
        return _Attempt(time.time_ns(), attempt)

    def _attempt_span(self, ctx: CallContext, handle: _Attempt, attributes: dict[str, Any],
                      error: str | None) -> None:
        """Create and end the span of a finished attempt (never raises)."""
        try:
            method = ctx.request.method if ctx.request is not None else "POST"
            attributes[n.A_HTTP_METHOD] = method
            attributes[n.A_URL_TEMPLATE] = ctx.route
            attributes[n.A_ATTEMPT] = handle.attempt
            if handle.attempt > 1:
                attributes[n.A_HTTP_RESEND_COUNT] = handle.attempt - 1
            parent = ctx.parent_context
            if parent is None:
                parent = ctx.parent_context = trace.set_span_in_context(ctx.span)
            span = self.tracer.start_span(n.SPAN_ATTEMPT.format(method=method, route=ctx.route), context=parent,
                                          kind=SpanKind.CLIENT, attributes=attributes, start_time=handle.start_ns)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()
        except Exception as exc:
            self.telemetry_error("span", exc)

    @_guarded()
    def end_attempt(
        self,
        ctx: CallContext,
        span: Any,
        *,
        outcome: str,
        reason: str,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        keep_open: bool = False,
    ) -> None:
        """An attempt ended: count it and make its span; ``keep_open`` (a streamed response) defers the span
        to the end of the body (:meth:`end_stream_attempt`), so that it covers the whole transfer."""
        self._attempts.add((ctx.model_label, ctx.operation, outcome, reason))
        if not isinstance(span, _Attempt):
            return
        attrs: dict[str, Any] = {n.A_REASON: reason}
        if status is not None:
            attrs[n.A_HTTP_STATUS] = status
        if request_id:
            attrs[n.A_UPSTREAM_REQUEST_ID] = request_id
        failed = outcome != n.ATTEMPT_SUCCESS
        if failed:
            attrs[n.A_ERROR_TYPE] = error_type or reason
        if keep_open:
            span.attributes = attrs
            ctx.attempt_span = span
        else:
            self._attempt_span(ctx, span, attrs, reason if failed else None)

    @_guarded()
    def end_stream_attempt(self, ctx: CallContext, cause: str | None = None) -> None:
        """The body of a streamed attempt ended: its span, OK, or ERROR with ``error.type`` the interruption's
        cause (a cut, a stall) — the span covers the whole transfer, not just the headers."""
        handle = ctx.attempt_span
        if not isinstance(handle, _Attempt):
            return
        ctx.attempt_span = None
        attrs = handle.attributes or {}
        if cause is not None:
            attrs[n.A_ERROR_TYPE] = cause
            attrs[n.A_REASON] = "stream_broken"
        self._attempt_span(ctx, handle, attrs, cause)

    @_guarded()
    def backoff(self, ctx: CallContext, *, attempt: int, delay_seconds: float, reason: str) -> None:
        """A backoff slept before the next attempt (or a wait for an open circuit or a budget period)."""
        self._event(ctx, n.E_BACKOFF, {n.A_ATTEMPT: attempt, n.A_DELAY_SECONDS: delay_seconds, n.A_REASON: reason})
        if reason == "circuit_open":
            self._event(ctx, n.E_BREAKER, {n.A_BREAKER_STATE: "open", n.A_WAIT_SECONDS: delay_seconds})
        self.m[n.BACKOFF].observe((ctx.model_label, reason), delay_seconds)
        self.logs.retry(ctx, attempt, reason, delay_seconds)

    @_guarded()
    def rate_limited_response(self, ctx: CallContext, resource: str) -> None:
        """A 429 rate-limit response came back from upstream."""
        self.m[n.RATE_LIMITED_RESPONSES].add((ctx.model_label, resource))

    @_guarded()
    def settled(self, ctx: CallContext, tokens: int) -> None:
        """The limiter settled this call's reservation at ``tokens``."""
        self._settled.add((ctx.model_label,), tokens)

    @_guarded()
    def end_call(self, ctx: CallContext, error: BaseException | None = None, *, error_type: str | None = None) -> None:
        """Finish the call exactly once: duration, usage, cost, outcome, estimate error, span status and end."""
        if ctx.ended:
            return
        ctx.ended = True
        duration = ctx.elapsed
        span = ctx.span
        model = ctx.model_label
        operation = ctx.operation
        exemplar = self._exemplar(ctx)
        etype = ""
        if error is not None or error_type is not None:
            etype = error_type or type(error).__name__
        usage = self._usage
        # Next to openai-v2 the two GenAI metrics it records are ours on /metrics only (see SHARED_WITH_OPENAI_V2).
        usage.otel_muted = self._duration.otel_muted = openai_v2_active()
        if ctx.input_tokens is not None:
            usage.observe((model, operation, n.TOKEN_INPUT), ctx.input_tokens, exemplar)
        if ctx.output_tokens is not None:
            usage.observe((model, operation, n.TOKEN_OUTPUT), ctx.output_tokens, exemplar)
        details = ctx.usage
        if details is not None:
            if details.cached_input_tokens:
                usage.observe((model, operation, n.TOKEN_CACHED_INPUT), details.cached_input_tokens, exemplar)
            if details.reasoning_tokens:
                usage.observe((model, operation, n.TOKEN_REASONING), details.reasoning_tokens, exemplar)
        self._estimate_error(ctx)
        self._duration.observe((model, operation, etype), duration, exemplar)
        self._requests.add((model, operation, n.OUTCOME_ERROR if etype else n.OUTCOME_SUCCESS, etype))
        debug = self.logs.enabled(logging.DEBUG)
        attrs = self._end_attributes(ctx, etype, error) if ctx.recording or debug else {}
        if ctx.recording:
            try:
                span.set_attributes(attrs)
                if etype:
                    # The status and the exception event carry the error's type (and code); its message may echo
                    # the prompt back, so it is kept only when content capture is on.
                    span.set_status(Status(StatusCode.ERROR, _redact(str(error), _secret(ctx))[:200]
                                           if self.capture_content and error else etype))
                    if error is not None:
                        self._exception_event(ctx, span, error)
            except Exception as exc:  # the span fails: it is still ended, the call still leaves the in-flight gauge
                self.telemetry_error("span", exc)
        self._end_span(span)
        self._inflight.delta((operation,), -1)
        if debug:
            if self.capture_content:  # the call span's start attribute, for the same fields as the span
                content = ctx.body.get("messages") or ctx.body.get("input")
                if content is not None:
                    attrs[n.A_INPUT_MESSAGES] = json.dumps(content, default=str)[:65536]
            self.logs.call_ended(ctx, attrs, etype, duration)

    def _end_span(self, span: Any) -> None:
        try:
            span.end()
        except Exception as exc:
            self.telemetry_error("span", exc)

    def _end_attributes(self, ctx: CallContext, etype: str, error: BaseException | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if ctx.response_model:
            attrs[n.A_RESPONSE_MODEL] = ctx.response_model
        if ctx.response_id:
            attrs[n.A_RESPONSE_ID] = ctx.response_id
        if ctx.finish_reasons:
            attrs[n.A_FINISH_REASONS] = ctx.finish_reasons
        if ctx.history:
            attrs[n.A_ATTEMPTS] = len(ctx.history)
        if ctx.stream_end is not None:
            attrs[n.A_STREAM_END] = ctx.stream_end
            attrs[n.A_CHUNKS] = ctx.chunks
        if ctx.input_tokens is not None:
            attrs[n.A_USAGE_INPUT] = ctx.input_tokens
        if ctx.output_tokens is not None:
            attrs[n.A_USAGE_OUTPUT] = ctx.output_tokens
        details = ctx.usage
        if details is not None:
            if details.cached_input_tokens:
                attrs[n.A_USAGE_CACHED_INPUT] = details.cached_input_tokens
            if details.reasoning_tokens:
                attrs[n.A_USAGE_REASONING] = details.reasoning_tokens
        cost = ctx.cost
        if cost is not None:  # total and parts in USD, priced as, batch; or unpriced and why
            attrs.update(cost_attributes(cost))
        if etype:
            attrs[n.A_ERROR_TYPE] = etype
            code = _error_code(error, _secret(ctx)) if error is not None else None
            if code:
                attrs[n.A_ERROR_CODE] = code
        if self.capture_content and ctx.output_text is not None:
            attrs[n.A_OUTPUT_MESSAGES] = ctx.output_text[:65536]
        return attrs

    def _exception_event(self, ctx: CallContext | None, span: Any, error: BaseException) -> None:
        """The semconv ``exception`` event; the message and stack trace only with content capture (and even
        then never the call's API key, which some upstreams echo in their error messages)."""
        secret = _secret(ctx) if ctx is not None else ""
        attrs: dict[str, Any] = {"exception.type": type(error).__qualname__}
        code = _error_code(error, secret)
        if code:
            attrs[n.A_ERROR_CODE] = code
        if self.capture_content:
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            span.record_exception(error, attributes={"exception.message": _redact(str(error), secret),
                                                     "exception.stacktrace": _redact(stack, secret)})
            return
        span.add_event("exception", attrs)

    def _estimate_error(self, ctx: CallContext) -> None:
        est = ctx.estimate
        if est is None:
            return
        model = ctx.model_label
        hist = self._error_ratio
        bias = self._bias
        if ctx.input_tokens:
            hist.observe((model, n.TOKEN_INPUT), abs(est.prompt_tokens - ctx.input_tokens) / ctx.input_tokens)
            bias.add((model, n.TOKEN_INPUT, n.KIND_ESTIMATED), est.prompt_tokens)
            bias.add((model, n.TOKEN_INPUT, n.KIND_ACTUAL), ctx.input_tokens)
        if ctx.output_tokens and est.predicted_output_tokens is not None:
            predicted = est.predicted_output_tokens
            hist.observe((model, n.TOKEN_OUTPUT), abs(predicted - ctx.output_tokens) / ctx.output_tokens)
            bias.add((model, n.TOKEN_OUTPUT, n.KIND_ESTIMATED), predicted)
            bias.add((model, n.TOKEN_OUTPUT, n.KIND_ACTUAL), ctx.output_tokens)

    # ------------------------------------------------------------------ streams
    @_guarded()
    def stream_opened(self, ctx: CallContext) -> None:
        """A stream's body started (the response headers arrived)."""
        self.m[n.STREAMS_ACTIVE].delta((ctx.operation,), 1)

    @_guarded()
    def first_chunk(self, ctx: CallContext, at: float) -> None:
        """Time to first chunk."""
        ctx.first_chunk_at = at
        ttfc = at - ctx.started
        if ctx.recording:
            try:
                ctx.span.set_attribute(n.A_TTFC, ttfc)
            except Exception as exc:
                self.telemetry_error("span", exc)
        self.m[n.TIME_TO_FIRST_CHUNK].observe((ctx.model_label, ctx.operation), ttfc, self._exemplar(ctx))

    def wants_chunk_event(self, ctx: CallContext, index: int) -> bool:
        """The chunk event policy: the first chunks, then every k-th, within the span's event limit."""
        return (index <= CHUNK_EVENTS_FIRST or index % CHUNK_EVENTS_EVERY == 0) and ctx.recording

    def chunk_event(self, ctx: CallContext, index: int, at: float | None = None) -> bool:
        """Add a span event for chunk ``index`` while under the span's event limit; False once over it."""
        try:
            if ctx.chunk_events >= self.chunk_event_limit(ctx):
                return False
            ctx.span.add_event(n.E_CHUNK, {n.A_CHUNK_INDEX: index})
            ctx.chunk_events += 1
            ctx.last_chunk_event = index
            return True
        except Exception as exc:
            self.telemetry_error("chunk_event", exc)
            return False

    @_guarded()
    def stream_chunks(self, ctx: CallContext, count: int, gaps: list[float]) -> None:
        """Chunks received since the last report: the chunk counter and the inter-chunk gaps."""
        labels = (ctx.model_label, ctx.operation)
        if count:
            self._chunks.add(labels, count)
        if gaps:
            self._per_chunk.observe_many(labels, gaps)

    @_guarded()
    def stream_closed(self, ctx: CallContext, state: str) -> None:
        """The stream ended (completed, error, closed_early, abandoned): last chunk event, summary, metrics."""
        labels = (ctx.model_label, ctx.operation)
        ctx.stream_end = state
        if ctx.recording:
            try:
                if ctx.chunks and ctx.last_chunk_event != ctx.chunks:
                    self.chunk_event(ctx, ctx.chunks)
                ctx.span.add_event(n.E_STREAM_SUMMARY, {
                    n.A_CHUNKS: ctx.chunks, n.A_CHUNKS_DROPPED: max(0, ctx.chunks - ctx.chunk_events),
                    n.A_STREAM_END: state,
                })
                ctx.span.set_attributes({n.A_STREAM_END: state, n.A_CHUNKS: ctx.chunks})
            except Exception as exc:  # the span fails: the stream's metrics below still close it
                self.telemetry_error("span", exc)
        self.m[n.STREAM_DURATION].observe(labels, ctx.elapsed, self._exemplar(ctx))
        self.m[n.STREAM_ENDS].add((ctx.model_label, ctx.operation, state))
        if ctx.first_chunk_at is not None and ctx.output_tokens:
            generating = time.monotonic() - ctx.first_chunk_at
            if generating > 0:
                self.m[n.STREAM_THROUGHPUT].observe(labels, ctx.output_tokens / generating)
        self.m[n.STREAMS_ACTIVE].delta((ctx.operation,), -1)

    @_guarded()
    def stall(self, ctx: CallContext, idle_seconds: float) -> None:
        """No chunk for longer than the stall timeout."""
        self._event(ctx, n.E_STALL, {n.A_WAIT_SECONDS: idle_seconds})
        self.m[n.STREAM_STALLS].add((ctx.model_label,))
        self.logs.stall(ctx, idle_seconds)

    @_guarded()
    def interruption(self, ctx: CallContext, cause: str, partial_chars: int) -> None:
        """A stream broke (stall, connection, server_error, malformed)."""
        self._event(ctx, n.E_INTERRUPTION, {n.A_CAUSE: cause, n.A_PARTIAL_CHARS: partial_chars})
        self.m[n.STREAM_INTERRUPTIONS].add((ctx.model_label, cause))
        self.logs.interrupted(ctx, cause, partial_chars)

    @_guarded()
    def resumption(self, ctx: CallContext, outcome: str, lost_seconds: float | None, sequence: int | None) -> None:
        """A resumption attempt and its outcome (success, failure)."""
        attrs: dict[str, Any] = {n.A_REASON: outcome}
        if lost_seconds is not None:
            attrs[n.A_LOST_SECONDS] = lost_seconds
            self.m[n.STREAM_RESUME_LOST].observe((ctx.model_label,), lost_seconds, self._exemplar(ctx))
        if sequence is not None:
            attrs[n.A_SEQUENCE] = sequence
        self._event(ctx, n.E_RESUME, attrs)
        self.m[n.STREAM_RESUMPTIONS].add((ctx.model_label, outcome))
        self.logs.resumed(ctx, outcome, lost_seconds, sequence)

    @_guarded()
    def checkpoint(self, ctx: CallContext, backend: str, checkpoint_id: str) -> None:
        """A stream checkpoint was written."""
        self._event(ctx, n.E_CHECKPOINT, {n.A_CHECKPOINT_ID: checkpoint_id})
        self.m[n.CHECKPOINTS_WRITTEN].add((ctx.model_label, backend))
        self.logs.checkpoint(ctx, backend, checkpoint_id)

    @_guarded()
    def forced_stream(self, ctx: CallContext, reason: str) -> None:
        """A non-streaming call is sent as a stream."""
        if ctx.recording:
            try:
                ctx.span.set_attribute(n.A_FORCED_STREAM, True)
            except Exception as exc:
                self.telemetry_error("span", exc)
            self._event(ctx, n.E_FORCED_STREAM, {n.A_REASON: reason})
        self.m[n.FORCED_STREAMS].add((ctx.model_label, reason))

    @_guarded()
    def adaptive_threshold(self, model: str, tokens: float) -> None:
        """The adaptive forced-streaming threshold for a model changed."""
        self.m[n.ADAPTIVE_THRESHOLD].set((self.model_label(model),), tokens)

    # ------------------------------------------------------------------ spans of their own
    @contextlib.contextmanager
    def operation_span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
        """An INTERNAL span around a larger operation (``process_files``, ``resume_checkpoint``), current while
        the ``with`` block runs, so the call spans opened inside are its children. An exception leaving the block
        ends it ERROR with ``error.type`` (its message only with content capture). Never raises of its own: a
        failing tracer gives a non-recording span."""
        try:
            span: Any = self.tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=dict(attributes))
        except Exception as exc:
            self.telemetry_error("tracer", exc)
            span = trace.INVALID_SPAN
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            try:
                yield span
            except BaseException as error:
                self._operation_failed(span, error)
                raise
            finally:
                try:
                    span.end()
                except Exception as exc:
                    self.telemetry_error("tracer", exc)

    def _operation_failed(self, span: Any, error: BaseException) -> None:
        try:
            if span.is_recording():
                etype = type(error).__name__
                span.set_attribute(n.A_ERROR_TYPE, etype)
                span.set_status(Status(StatusCode.ERROR, str(error)[:200] if self.capture_content else etype))
                self._exception_event(None, span, error)
        except Exception as exc:
            self.telemetry_error("operation_span", exc)

    @_guarded()
    def checkpoint_resumed(self, span: Any, attributes: Mapping[str, Any]) -> None:
        """A stream is continued from its checkpoint: the ``resume_checkpoint`` span's attributes (checkpoint id,
        operation, model, characters and sequence number it continues from) and an INFO log record."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        if span.is_recording():
            span.set_attributes(attrs)
        self.logs.checkpoint_resumed(attrs)

    # ------------------------------------------------------------------ cost (CostEvents and the call's budget)
    @_guarded()
    def tagged(self, ctx: CallContext) -> None:
        """The call's attribution tags (span attributes; metrics get them folded, at settlement)."""
        if ctx.recording:
            ctx.span.set_attributes(tag_attributes(ctx.tags))

    @_guarded()
    def budget_admitted(self, ctx: CallContext, reservation: Any) -> None:
        """The call's worst-case cost was reserved against its budgets (a span event)."""
        self._event(ctx, n.E_BUDGET, budget_attributes(reservation))

    @_guarded()
    def budget_refused(self, ctx: CallContext, error: Any) -> None:
        """A budget refused the call (a span event; the call then fails with ``BudgetExceeded``)."""
        attrs = budget_attributes(error)
        self._event(ctx, n.E_BUDGET, attrs)
        self.logs.budget_refused(ctx, attrs)

    @_guarded()
    def call_cost(self, model: str, labels: tuple[str, ...], cost: Any) -> None:
        """CostEvents: one request settled at ``cost`` (the cost counter by token type, cached savings)."""
        label = self.model_label(model)
        counter = self.m[n.COST_USD]
        for token_type, usd in cost.by_token_type().items():
            if usd:
                counter.add((label, token_type, *labels), usd)
        if cost.cached_savings_usd:
            self.m[n.COST_SAVINGS_USD].add((label,), cost.cached_savings_usd)

    @_guarded()
    def call_unpriced(self, model: str, labels: tuple[str, ...], reason: str) -> None:
        """CostEvents: a request settled without a price (never guessed)."""
        self.m[n.UNPRICED_CALLS].add((self.model_label(model), reason))

    @_guarded()
    def budget_decision(self, budget: str, period: str, decision: str) -> None:
        """CostEvents: one budget's decision for one call."""
        self.m[n.BUDGET_DECISIONS].add((budget, period, decision))

    @_guarded()
    def budget_state(self, budget: str, period: str, spent_usd: float, limit_usd: float) -> None:
        """CostEvents: a budget's spend in its current period and its limit (gauges)."""
        self.m[n.BUDGET_SPEND_USD].set((budget, period), spent_usd)
        self.m[n.BUDGET_LIMIT_USD].set((budget, period), limit_usd)

    @_guarded()
    def budget_fallback(self, backend: str, active: bool) -> None:
        """CostEvents: the shared budget backend failed (active) or came back."""
        self.m[n.BUDGET_FALLBACK_ACTIVE].set((backend,), 1.0 if active else 0.0)

    @_guarded()
    def tag_folded(self, key: str) -> None:
        """CostEvents: a tag value was folded into ``other``."""
        self.m[n.TAG_VALUES_FOLDED].add((key,))

    # ------------------------------------------------------------------ component events (Protocols)
    @_guarded()
    def tokenizer_fallback(self, reason: str) -> None:
        """EstimatorEvents: tokenizer data could not be loaded; the fallback estimate is in use."""
        self.m[n.TOKENIZER_FALLBACK].set((), 1.0)
        if "tokenizer" not in self._warned:
            self._warned.add("tokenizer")
            log.warning("tokenizer data unavailable (%s): using the fallback estimate", reason)

    @_guarded()
    def limiter_fallback(self, backend: str, active: bool) -> None:
        """LimiterEvents: the shared backend failed (active) or came back."""
        self.m[n.LIMITER_FALLBACK_ACTIVE].set((backend,), 1.0 if active else 0.0)
        if active:
            self.m[n.LIMITER_FALLBACKS].add((backend,))

    @_guarded()
    def redis_fallback(self, feature: str, reason: str) -> None:
        """RedisEvents: one operation of ``feature`` did not use Redis (failed, or skipped during the back-off)."""
        self.m[n.REDIS_FALLBACKS].add((feature, reason))

    @_guarded()
    def ratelimit_header_error(self, reason: str) -> None:
        """LimiterEvents: an x-ratelimit-* header was missing or unparsable."""
        self.m[n.RATELIMIT_HEADER_ERRORS].add((reason,))

    @_guarded()
    def cooldown(self, model: str, resource: str, seconds: float) -> None:
        """LimiterEvents: a key entered cooldown after a 429."""
        self.m[n.RATELIMIT_COOLDOWNS].add((self.model_label(model), resource))

    @_guarded()
    def limits_learned(self, model: str, resource: str, limit: float, remaining: float) -> None:
        """LimiterEvents: current limit and remaining capacity (gauges)."""
        label = self.model_label(model)
        self.m[n.RATELIMIT_LIMIT].set((label, resource), limit)
        self.m[n.RATELIMIT_REMAINING].set((label, resource), remaining)

    @_guarded()
    def limiter_decision_time(self, backend: str, seconds: float) -> None:
        """LimiterEvents: time one backend decision took."""
        self.m[n.LIMITER_DECISION_SECONDS].observe((backend,), seconds)

    @_guarded()
    def retry_budget_exhausted(self, model: str) -> None:
        """RetryEvents: a retry was refused by the retry budget."""
        self.m[n.RETRY_BUDGET_EXHAUSTED].add((self.model_label(model),))

    @_guarded()
    def breaker_transition(self, endpoint: str, model: str, state: str) -> None:
        """RetryEvents: a circuit breaker changed state."""
        label = self.model_label(model)
        value = n.BREAKER_STATE_VALUES.get(state, 0.0)
        self.m[n.BREAKER_STATE].set((label, endpoint), value)
        self.m[n.BREAKER_TRANSITIONS].add((label, endpoint, state))
        self.logs.breaker(endpoint, model, state)

    @_guarded()
    def file_read(self, bytes_read: int, tokens: int) -> None:
        """FileEvents: one file read."""
        self.m[n.FILES_READ].add(())
        self.m[n.FILE_BYTES_READ].add((), bytes_read)
        self.m[n.FILE_TOKENS_READ].add((), tokens)

    @_guarded()
    def file_refused(self, reason: str) -> None:
        """FileEvents: a file refused or skipped, by closed reason code."""
        self.m[n.FILES_REFUSED].add((reason,))
        self.logs.file_refused(reason)

    @_guarded()
    def chunks_produced(self, sizes_tokens: list[int], seconds: float) -> None:
        """FileEvents: chunks produced from a file and the time it took."""
        self.m[n.FILE_CHUNKS].add((), len(sizes_tokens))
        self.m[n.FILE_CHUNK_SIZE].observe_many((), [float(s) for s in sizes_tokens])
        self.m[n.CHUNKING_SECONDS].add((), seconds)

    def snapshot_labels(self) -> Mapping[str, str]:
        """Known model labels (for tests and the demo summary)."""
        return self.models.known()
