"""CallContext: everything one protected call carries through the pipeline's stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from .errors import AttemptRecord

OPERATION_FOR_ROUTE: dict[str, str] = {
    "/chat/completions": "chat",
    "/responses": "responses",
    "/embeddings": "embeddings",
}


@dataclass(eq=False)
class CallContext:
    """State of one protected call: model, endpoint, params, its span and its reservation."""

    operation: str
    route: str
    model: str
    model_label: str
    body: dict[str, Any]
    stream: bool
    span: Span
    started: float = field(default_factory=time.monotonic)
    forced_stream: bool = False
    limiter_key: Any = None
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
    status_code: int | None = None
    headers: Any = None
    pipeline: Any = None
    include_usage_requested: bool = True
    output_text: str | None = None
    resumption_of: Any = None
    """Set on the child context of a resumed request: the call it belongs to."""
    background: bool = False
    """A Responses stream sent with ``background: true`` (resumable by sequence number)."""

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started
