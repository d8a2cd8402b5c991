"""CallContext: everything one protected call carries from stage to stage (passed explicitly)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from .errors import AttemptRecord


@dataclass(eq=False, slots=True)
class CallContext:
    """State of one protected call: model, endpoint, params, its span, its request and its reservation.

    A resumed request of a broken stream gets a *child* context (``parent`` set): it shares the
    call's span and model but has its own request, estimate, reservation and attempt history.
    """

    operation: str
    route: str
    model: str
    model_label: str
    body: dict[str, Any]
    stream: bool
    span: Span
    started: float = field(default_factory=time.monotonic)
    request: Any = None
    """The ``middleware.sdk.SdkRequest`` being sent (the forced-stream one once forced)."""
    options: Any = None
    """The SDK request options every attempt sends (SDK retries off, stream options, idle timeout)."""
    forced_stream: bool = False
    limiter_key: Any = None
    reserve_tokens: int = 0
    reservation: Any = None
    estimate: Any = None
    history: list[AttemptRecord] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    trace_id: str | None = None
    ended: bool = False
    settled: bool = False
    first_chunk_at: float | None = None
    chunks: int = 0
    chunk_events: int = 0
    include_usage_requested: bool = True
    output_text: str | None = None
    background: bool = False
    """A Responses stream sent with ``background: true`` (resumable by sequence number)."""
    observer: Any = None
    """The stream observer of a streamed call (set before the stream arrives)."""
    seed: Any = None
    """A checkpoint this call continues (``middleware.streaming.recover``)."""
    progress_callback: Any = None
    parent: CallContext | None = None
    """Set on the context of a resumed request: the call it belongs to."""
    tags: dict[str, str] = field(default_factory=dict)
    """Attribution tags (``middleware.tags()`` blocks and allow-listed request metadata)."""
    usage: Any = None
    """The usage the upstream reported (``middleware.cost.Usage``: input, cached input, output, reasoning)."""
    budget: Any = None
    """The budget reservation of this request (``middleware.cost.BudgetReservation``), if a budget applies."""
    cost: Any = None
    """What the call cost (``middleware.cost.Cost``, or ``Unpriced``), set at settlement."""
    received_tokens: int | None = None
    """Output tokens received by this request before it broke (set on a break; its usage is never reported)."""
    recording: bool = False
    """The call span records (sampled): span events and attributes are built only then."""
    span_id: str | None = None
    parent_context: Any = None
    """The OTel context with the call span current (built once, for the attempt spans)."""
    attempt_span: Any = None
    """The attempt span of a streamed response, open until the body ends."""
    last_chunk_event: int = 0
    stream_end: str | None = None
    """How the stream ended (completed, error, closed_early, abandoned), once it has (set by the recorder)."""

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started

    def child(self, request: Any) -> CallContext:
        """A context for one resumed request of this call: same span and model, its own request and reservation."""
        return CallContext(
            operation=self.operation, route=request.route, model=self.model, model_label=self.model_label,
            body=request.body, stream=True, span=self.span, started=self.started, request=request,
            limiter_key=self.limiter_key, trace_id=self.trace_id, background=self.background,
            include_usage_requested=self.include_usage_requested, parent=self, tags=self.tags,
            recording=self.recording, span_id=self.span_id, parent_context=self.parent_context,
        )
