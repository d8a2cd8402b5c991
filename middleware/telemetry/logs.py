"""Structured log records: one per decision worth reading later, correlated with the call's trace.

Library style: records go to the ``middleware`` logger (which has a ``NullHandler`` and no level or
handler of ours); the application decides where they go. Each record carries ``trace_id`` and
``span_id`` and the same fields as the span (``llm_middleware.*`` keys), never message content. It is
emitted with the call span current, so OpenTelemetry's logging bridge (a ``LoggingHandler`` of an
installed ``LoggerProvider``) correlates it with the trace when it ships it as an OTLP log record.
Building a record costs nothing when the logger is not enabled for its level.

=====================================  =======  ===================================================
event (``llm_middleware.event``)       level    when
=====================================  =======  ===================================================
``call_end``                           DEBUG    every call, at its end (outcome, duration, tokens, cost)
``retry``                              INFO     a retry is scheduled (reason, delay)
``throttle_wait``                      INFO     the limiter held a call longer than the threshold
``refused``                            WARNING  the limiter or a budget refused a call
``breaker``                            WARNING  a circuit breaker changed state
``stall`` / ``interruption``           WARNING  a stream went idle / broke
``resumption``                         INFO     a broken stream was resumed (or the attempt failed)
``checkpoint``                         DEBUG    a stream checkpoint was written
``checkpoint_resumed``                 INFO     a stream was continued from a checkpoint
``file_refused``                       INFO     a file was refused (reason code)
=====================================  =======  ===================================================
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from ..context import CallContext

LOGGER = logging.getLogger("middleware")
EVENT = "llm_middleware.event"


def _fields(ctx: CallContext) -> dict[str, Any]:
    return {
        "trace_id": ctx.trace_id or "", "span_id": ctx.span_id or "",
        "gen_ai.operation.name": ctx.operation, "gen_ai.request.model": ctx.model_label,
        **{f"llm_middleware.tag.{k}": v for k, v in ctx.tags.items()},
    }


class CallLog:
    """The recorder's log records (each method is a no-op unless the logger is enabled for its level)."""

    def __init__(self, slow_throttle_seconds: float = 1.0) -> None:
        self.slow_throttle_seconds = slow_throttle_seconds

    @staticmethod
    def _emit(level: int, event: str, message: str, ctx: CallContext | None, **fields: Any) -> None:
        extra: dict[str, Any] = {EVENT: event}
        if ctx is not None:
            extra.update(_fields(ctx))
        extra.update({f"llm_middleware.{k}": v for k, v in fields.items()})
        if ctx is not None and ctx.recording:
            with trace.use_span(ctx.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                LOGGER.log(level, message, extra=extra)
        else:
            LOGGER.log(level, message, extra=extra)

    def call_ended(self, ctx: CallContext, error_type: str, duration: float) -> None:
        """DEBUG: the call ended."""
        if not LOGGER.isEnabledFor(logging.DEBUG):
            return
        cost = getattr(ctx.cost, "total_usd", None)
        what = f"error {error_type}" if error_type else "ok"
        self._emit(logging.DEBUG, "call_end", f"{ctx.operation} {ctx.model_label} {what} in {duration:.3f}s", ctx,
                   outcome="error" if error_type else "success", error_type=error_type,
                   duration_seconds=round(duration, 6), attempts=len(ctx.history),
                   input_tokens=ctx.input_tokens, output_tokens=ctx.output_tokens, cost_usd=cost)

    def retry(self, ctx: CallContext, attempt: int, reason: str, delay: float) -> None:
        """INFO: a retry (or a wait for an open circuit or a budget period)."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "retry", f"retry after attempt {attempt}: {reason}, waiting {delay:.3f}s", ctx,
                       attempt=attempt, reason=reason, delay_seconds=round(delay, 6))

    def throttled(self, ctx: CallContext, decision: str, reason: str, wait: float, tokens: int) -> None:
        """INFO: a long limiter wait; WARNING: a refusal."""
        if decision == "refused":
            if LOGGER.isEnabledFor(logging.WARNING):
                self._emit(logging.WARNING, "refused", f"limiter refused the call: {reason}", ctx, reason=reason,
                           wait_seconds=round(wait, 6), reserved_tokens=tokens)
        elif wait >= self.slow_throttle_seconds and LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "throttle_wait", f"limiter held the call {wait:.3f}s ({reason})", ctx,
                       reason=reason, wait_seconds=round(wait, 6), reserved_tokens=tokens)

    def budget_refused(self, ctx: CallContext, error: Any) -> None:
        """WARNING: a budget refused the call."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, "refused", "budget refused the call", ctx, reason="budget",
                       budget=getattr(error, "budget", ""), period=getattr(error, "period", ""),
                       spent_usd=getattr(error, "spent_usd", None), limit_usd=getattr(error, "limit_usd", None))

    def breaker(self, endpoint: str, model: str, state: str) -> None:
        """WARNING: a circuit breaker changed state."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, "breaker", f"circuit breaker {endpoint} {model}: {state}", None,
                       endpoint=endpoint, model=model, state=state)

    def stall(self, ctx: CallContext, idle: float) -> None:
        """WARNING: a stream went idle past the timeout."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, "stall", f"stream idle for {idle:.1f}s", ctx, idle_seconds=idle)

    def interrupted(self, ctx: CallContext, cause: str, chars: int) -> None:
        """WARNING: a stream broke."""
        if LOGGER.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, "interruption", f"stream interrupted ({cause}) after {chars} characters",
                       ctx, cause=cause, partial_chars=chars)

    def resumed(self, ctx: CallContext, outcome: str, lost: float | None) -> None:
        """INFO: a resumption and its outcome."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "resumption", f"stream resumption: {outcome}", ctx, outcome=outcome,
                       lost_seconds=lost)

    def checkpoint(self, ctx: CallContext, backend: str, checkpoint_id: str) -> None:
        """DEBUG: a checkpoint was written."""
        if LOGGER.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, "checkpoint", f"checkpoint {checkpoint_id} written ({backend})", ctx,
                       checkpoint_id=checkpoint_id, backend=backend)

    def checkpoint_resumed(self, ctx: CallContext, checkpoint_id: str) -> None:
        """INFO: a stream is continued from its checkpoint."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "checkpoint_resumed", f"stream continued from checkpoint {checkpoint_id}",
                       ctx, checkpoint_id=checkpoint_id)

    def file_refused(self, reason: str) -> None:
        """INFO: a file was refused."""
        if LOGGER.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "file_refused", f"file refused: {reason}", None, reason=reason)
