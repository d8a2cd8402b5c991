"""Structured log records: one per decision worth reading later, correlated with the call's trace.

Library style: records go to the ``middleware`` logger (which has a ``NullHandler`` and no level or
handler of ours); the application decides where they go and from which level (``logging.getLogger(
"middleware").setLevel(logging.INFO)``). Each record carries ``trace_id`` and ``span_id`` and states its
facts under the names of the span attributes of the same decision (``names.A_*``), never message content
unless content capture is on (then ``call_end`` carries the call span's ``gen_ai.*.messages`` too), never
an API key (the limiter key is a hash of it). It is emitted with the call span current, so OpenTelemetry's
logging bridge (a ``LoggingHandler`` of an installed ``LoggerProvider``) ships it as an OTLP log record of
that trace and span. A record about no call in particular (a breaker transition, a refused file, a
checkpoint resumed) carries the ids of the span current when it happens: the ``process_files`` or
``resume_checkpoint`` span, or the application's own. Building a record costs nothing when the logger is
not enabled for its level, and no field is ``None`` (absent facts are left out).

=====================================  =======  ===================================================
event (``llm_middleware.event``)       level    when
=====================================  =======  ===================================================
``call_end``                           DEBUG    every call, at its end (outcome, duration, usage, cost, error)
``retry``                              INFO     a retry is scheduled (reason, delay); also a wait for an open
                                                circuit (reason ``circuit_open``) or a budget period (``budget``)
``throttle_wait``                      INFO     the limiter held a call at least the slow-throttle threshold
``refused``                            WARNING  the limiter or a budget refused a call
``breaker``                            WARNING  a circuit breaker changed state
``stall`` / ``interruption``           WARNING  a stream went idle / broke
``resumption``                         INFO     a broken stream was resumed (WARNING: the resumed request failed)
``checkpoint``                         DEBUG    a stream checkpoint was written
``checkpoint_resumed``                 INFO     a stream is continued from a checkpoint (``resume()``)
``file_refused``                       INFO     a file was refused (reason code, never its path)
=====================================  =======  ===================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from ..context import CallContext
from . import names as n

LOGGER = logging.getLogger("middleware")
DEFAULT_SLOW_THROTTLE_SECONDS = 1.0


def _call_fields(ctx: CallContext) -> dict[str, Any]:
    fields: dict[str, Any] = {
        n.LOG_TRACE_ID: ctx.trace_id or "", n.LOG_SPAN_ID: ctx.span_id or "",
        n.A_OPERATION: ctx.operation, n.A_REQUEST_MODEL: ctx.model,
    }
    for key, value in ctx.tags.items():
        fields[n.A_TAG_PREFIX + key] = value
    return fields


def _current_fields() -> dict[str, Any]:
    """The ids of the span current now (empty strings when there is none)."""
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return {n.LOG_TRACE_ID: "", n.LOG_SPAN_ID: ""}
    return {n.LOG_TRACE_ID: format(sc.trace_id, "032x"), n.LOG_SPAN_ID: format(sc.span_id, "016x")}


class CallLog:
    """The recorder's log records (each method is a no-op unless the logger is enabled for its level)."""

    def __init__(self, slow_throttle_seconds: float = DEFAULT_SLOW_THROTTLE_SECONDS) -> None:
        self.slow_throttle_seconds = slow_throttle_seconds

    @staticmethod
    def enabled(level: int) -> bool:
        """True when a record of ``level`` would be built (the ``middleware`` logger is enabled for it)."""
        return LOGGER.isEnabledFor(level)

    @staticmethod
    def _emit(level: int, event: str, message: str, ctx: CallContext | None, fields: Mapping[str, Any]) -> None:
        extra: dict[str, Any] = _call_fields(ctx) if ctx is not None else _current_fields()
        extra[n.LOG_EVENT] = event
        extra.update((k, v) for k, v in fields.items() if v is not None)
        if ctx is not None and ctx.recording:
            # The call span current while the record is handled: OTel's logging bridge reads it from the context.
            with trace.use_span(ctx.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                LOGGER.log(level, message, extra=extra)
        else:
            LOGGER.log(level, message, extra=extra)

    def call_ended(self, ctx: CallContext, attributes: Mapping[str, Any], error_type: str, duration: float) -> None:
        """DEBUG: the call ended; ``attributes`` are the call span's end attributes."""
        if not LOGGER.isEnabledFor(logging.DEBUG):
            return
        what = f"error {error_type}" if error_type else "ok"
        self._emit(logging.DEBUG, n.LOG_CALL_END, f"{ctx.operation} {ctx.model} {what} in {duration:.3f}s", ctx, {
            **attributes, n.LOG_OUTCOME: n.OUTCOME_ERROR if error_type else n.OUTCOME_SUCCESS,
            n.LOG_DURATION_SECONDS: round(duration, 6), n.A_REQUEST_STREAM: ctx.stream,
        })

    def retry(self, ctx: CallContext, attempt: int, reason: str, delay: float) -> None:
        """INFO: a retry (or a wait for an open circuit or a budget period): the backoff event's fields."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, n.LOG_RETRY, f"retry after attempt {attempt} ({reason}) in {delay:.3f}s", ctx,
                       {n.A_ATTEMPT: attempt, n.A_REASON: reason, n.A_DELAY_SECONDS: delay})

    def throttled(self, ctx: CallContext, attributes: Mapping[str, Any], decision: str, reason: str,
                  wait: float) -> None:
        """INFO: a limiter wait of at least the threshold; WARNING: a refusal (the throttle event's fields)."""
        if decision == n.DECISION_REFUSED:
            if LOGGER.isEnabledFor(logging.WARNING):
                self._emit(logging.WARNING, n.LOG_REFUSED, f"limiter refused the call ({reason})", ctx, attributes)
        elif wait >= self.slow_throttle_seconds and LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, n.LOG_THROTTLE_WAIT, f"limiter held the call {wait:.3f}s ({reason})", ctx,
                       attributes)

    def budget_refused(self, ctx: CallContext, attributes: Mapping[str, Any]) -> None:
        """WARNING: a budget refused the call (the budget event's fields)."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, n.LOG_REFUSED, "budget refused the call", ctx,
                       {n.A_REASON: "budget", **attributes})

    def breaker(self, endpoint: str, model: str, state: str) -> None:
        """WARNING: a circuit breaker changed state (shared by calls: the ids are those of the current span)."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, n.LOG_BREAKER, f"circuit breaker {endpoint} {model}: {state}", None,
                       {n.A_URL_TEMPLATE: endpoint, n.A_REQUEST_MODEL: model, n.A_BREAKER_STATE: state})

    def stall(self, ctx: CallContext, idle: float) -> None:
        """WARNING: a stream went idle past the timeout (the stall event's fields)."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, n.LOG_STALL, f"stream idle for {idle:.1f}s", ctx, {n.A_WAIT_SECONDS: idle})

    def interrupted(self, ctx: CallContext, cause: str, chars: int) -> None:
        """WARNING: a stream broke (the interruption event's fields)."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, n.LOG_INTERRUPTION, f"stream interrupted ({cause}) after {chars} characters",
                       ctx, {n.A_CAUSE: cause, n.A_PARTIAL_CHARS: chars})

    def resumed(self, ctx: CallContext, outcome: str, lost: float | None, sequence: int | None) -> None:
        """INFO: a stream resumed; WARNING: its resumed request failed (the resume event's fields)."""
        level = logging.INFO if outcome == n.RESUME_SUCCESS else logging.WARNING
        if LOGGER.isEnabledFor(level):
            self._emit(level, n.LOG_RESUMPTION, f"stream resumption: {outcome}", ctx,
                       {n.A_REASON: outcome, n.A_LOST_SECONDS: lost, n.A_SEQUENCE: sequence})

    def checkpoint(self, ctx: CallContext, backend: str, checkpoint_id: str) -> None:
        """DEBUG: a checkpoint was written (the checkpoint event's fields and the store's backend)."""
        if LOGGER.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, n.LOG_CHECKPOINT, f"checkpoint {checkpoint_id} written ({backend})", ctx,
                       {n.A_CHECKPOINT_ID: checkpoint_id, n.LOG_CHECKPOINT_BACKEND: backend})

    def checkpoint_resumed(self, attributes: Mapping[str, Any]) -> None:
        """INFO: a stream is continued from its checkpoint (the ``resume_checkpoint`` span's attributes)."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, n.LOG_CHECKPOINT_RESUMED,
                       f"stream continued from checkpoint {attributes.get(n.A_CHECKPOINT_ID)}", None, attributes)

    def file_refused(self, reason: str) -> None:
        """INFO: a file was refused (its reason code; never its path or content)."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, n.LOG_FILE_REFUSED, f"file refused: {reason}", None, {n.A_REASON: reason})
