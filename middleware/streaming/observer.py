"""The per-stream observer: progress, timing, partial result, checkpoints, resumption decisions.

Per chunk it does only cheap local work (a timestamp, counters, the partial-text buffer and two
comparisons); metrics are flushed in batches, progress is reported on a timer and checkpoints are
written every ``checkpoint_every_chunks`` chunks. The decisions taken when a stream breaks are
written once here; the guarded stream classes (``middleware.sdk.streams``) only carry out the I/O,
and the pipeline sends the resumed requests (``Pipeline.resume_sync`` / ``resume_async``).

The pipeline creates the observer before the stream arrives and hands it to the stream through the
adapter; the stream *claims* it when the SDK builds it, and from then on the call ends with the stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import CallContext
from ..cost import read_usage
from ..errors import PartialResult, StreamInterrupted
from ..telemetry import names as n
from ..telemetry.recorder import CHUNK_EVENTS_EVERY, CHUNK_EVENTS_FIRST
from .checkpoint import Checkpoint, CheckpointUnavailable, new_checkpoint_id
from .progress import snapshot
from .resumption import continuation_body, interruption_cause

if TYPE_CHECKING:
    from ..pipeline import Pipeline

FLUSH_EVERY = 64
FLUSH_SECONDS = 0.5


@dataclass(frozen=True)
class Seed:
    """What a stream continues from when it is a resumption of a checkpoint (``resume()``)."""

    checkpoint_id: str
    body: dict[str, Any]
    text: str
    tokens: int
    response_id: str | None = None
    sequence_number: int | None = None


@dataclass(frozen=True)
class ResumePlan:
    """How to continue a broken stream: a chat continuation body, or a Responses cursor."""

    kind: str  # "chat" | "responses"
    body: dict[str, Any] | None = None
    response_id: str | None = None
    starting_after: int | None = None


def replay_headers(headers: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    """The request headers a checkpoint may store: only those on the allow-list
    (``StreamConfig.checkpoint_replay_headers``); the resuming client brings its own credentials."""
    allow = {a.lower() for a in allowed}
    return {k: v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str) and k.lower() in allow}


class StreamObserver:
    """Per-stream state, the decisions taken when it breaks, and the single end of the call."""

    __slots__ = (
        "__weakref__",
        "_body",
        "_chat",
        "_children",
        "_created",
        "_event_limit",
        "_expected",
        "_flushed",
        "_gaps",
        "_interval",
        "_last",
        "_next_ckpt",
        "_next_count",
        "_next_due",
        "_next_event",
        "_next_flush",
        "_next_progress",
        "_opening",
        "_parts",
        "_resumptions",
        "_seam",
        "_segment_start",
        "_splice",
        "_store",
        "_tokens",
        "checkpoint_id",
        "claimed",
        "ctx",
        "done",
        "on_progress",
        "partial",
        "pipeline",
        "services",
    )

    def __init__(self, pipeline: Pipeline, ctx: CallContext) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.services = services = pipeline.streaming
        cfg = services.config
        self.done = False
        self.claimed = False
        self._last: float | None = None
        self._gaps: list[float] = []
        self._parts: list[str] = []
        self._tokens = 0
        self._body = ctx.body
        self.partial = PartialResult()
        self._event_limit = 0
        self._chat = ctx.operation == "chat"
        self._next_event: float = math.inf  # the chunk index of the next chunk span event (set when claimed)
        self._flushed = 0
        self._next_flush = 0.0
        self._next_due = 0.0  # the soonest of _next_flush and _next_progress
        self._next_count: float = 0  # the soonest chunk count at which a flush or a checkpoint falls due
        self._seam: float | None = None
        self._splice: tuple[str, int] | None = None
        self._opening = False
        self._created = 0
        self._resumptions = 0
        self._segment_start = 0
        self._children: list[CallContext] = []
        self.checkpoint_id: str | None = None
        seed = ctx.seed
        if seed is not None:
            self._body = seed.body
            self._parts.append(seed.text)
            self._tokens = seed.tokens
            self.checkpoint_id = seed.checkpoint_id
            if ctx.operation == "responses":
                ctx.background = seed.body.get("background") is True
                self.partial.response_id = seed.response_id
                self.partial.sequence_number = seed.sequence_number
        self._segment_start = self._tokens
        self._store = services.store
        every = cfg.checkpoint_every_chunks
        self._next_ckpt = every if self._store is not None and every > 0 else math.inf
        if self._store is not None and self.checkpoint_id is None:
            self.checkpoint_id = new_checkpoint_id()
        self.on_progress = ctx.progress_callback
        self._interval = cfg.progress_interval_seconds
        self._next_progress = math.inf
        est = ctx.estimate
        self._expected: int | None = None
        if est is not None:
            self._expected = est.predicted_output_tokens or est.max_output_tokens

    def claim(self) -> None:
        """The stream carrying the call was built from the response: the call now ends with it."""
        if self.claimed:
            return
        self.claimed = True
        recorder = self.pipeline.recorder
        self._event_limit = recorder.chunk_event_limit(self.ctx)
        if self.ctx.recording and self._event_limit > 0:
            self._next_event = self.ctx.chunks + 1 if self.ctx.chunks < CHUNK_EVENTS_FIRST \
                else (self.ctx.chunks // CHUNK_EVENTS_EVERY + 1) * CHUNK_EVENTS_EVERY
        if self.on_progress is not None:
            self._next_progress = time.monotonic() + self._interval
        self._reschedule()
        recorder.stream_opened(self.ctx)

    @property
    def hides_null_usage(self) -> bool:
        """A chat stream whose usage the middleware asked for, the caller not: its chunks' ``"usage": null``
        is taken out before the SDK parses them (``middleware.sdk.streams``)."""
        return self._chat and not self.ctx.include_usage_requested

    def abandon_unclaimed(self) -> None:
        """The raw response was collected without its stream ever being built: end the call as abandoned."""
        if not self.claimed and not self.done:
            self.claimed = True
            self.pipeline.recorder.stream_opened(self.ctx)
            self.finish(n.STREAM_END_ABANDONED)

    # ---------------------------------------------------------------- per chunk
    def on_chunk(self, chunk: Any) -> bool:
        """Record one chunk; return False when the chunk must be hidden from the caller."""
        now = time.monotonic()
        last = self._last
        self._last = now
        if last is None:
            self._first(now)
        else:
            self._gaps.append(now - last)
        ctx = self.ctx
        index = ctx.chunks = ctx.chunks + 1
        if index >= self._next_event:
            self._chunk_event(index)
        visible = self._read_chat(chunk) if self._chat else self._read_event(chunk)
        if now >= self._next_due or index >= self._next_count:
            self._due(now, index)
        return visible

    def _chunk_event(self, index: int) -> None:
        """A chunk span event (the first chunks, then every k-th, within the span's event limit)."""
        ctx = self.ctx
        if ctx.chunk_events < self._event_limit and self.pipeline.recorder.chunk_event(ctx, index):
            self._next_event = index + 1 if index < CHUNK_EVENTS_FIRST \
                else (index // CHUNK_EVENTS_EVERY + 1) * CHUNK_EVENTS_EVERY
        else:
            self._next_event = math.inf

    def _due(self, now: float, index: int) -> None:
        """What falls due by time or by count: the live flush, a progress report, a checkpoint."""
        if now >= self._next_flush or len(self._gaps) >= FLUSH_EVERY:
            self.flush(now)
        if now >= self._next_progress:
            self._report(now)
        if index >= self._next_ckpt:
            self.write_checkpoint()
        self._reschedule()

    def _reschedule(self) -> None:
        self._next_due = min(self._next_flush, self._next_progress)
        self._next_count = min(self._flushed + FLUSH_EVERY, self._next_ckpt)

    def _first(self, now: float) -> None:
        seam = self._seam
        if seam is None:
            self.pipeline.recorder.first_chunk(self.ctx, now)
            return
        self._seam = None
        self.pipeline.recorder.resumption(self.ctx, n.RESUME_SUCCESS, now - seam, self.partial.sequence_number)

    def _read_chat(self, chunk: Any) -> bool:
        choices = chunk.choices
        splice = self._splice
        if splice is not None:
            chunk.id, chunk.created = splice
            if self._opening:
                self._opening = False
                if _is_role_only(chunk):
                    return False
        if choices:
            choice = choices[0]
            delta = choice.delta
            content = delta.content if delta is not None else None
            if content:
                self._parts.append(content)
                self._tokens += 1
            if delta is not None and delta.tool_calls:
                for call in delta.tool_calls:
                    self.partial.tool_calls.append(call.model_dump(exclude_none=True))
            if choice.finish_reason:
                self.partial.finish_reason = choice.finish_reason
        usage = chunk.usage
        if usage is not None:
            reported = read_usage(usage)
            if reported is not None:
                self.ctx.usage = reported
                self.ctx.input_tokens = reported.input_tokens
                self.ctx.output_tokens = reported.output_tokens
                self.partial.usage = {"input_tokens": reported.input_tokens, "output_tokens": reported.output_tokens}
            if not self.ctx.include_usage_requested:
                # We asked for usage, the caller did not: a chunk that carries only usage is hidden, whatever
                # its choices look like (some gateways send one empty choice with it); usage riding on a chunk
                # with content is taken off it, so the caller sees what it would have seen without us.
                if _carries_only_usage(choices):
                    return False
                chunk.usage = None
        if self.partial.response_id is None:
            self.partial.response_id = chunk.id
            self.ctx.response_id = chunk.id
            self.ctx.response_model = chunk.model
            self._created = chunk.created
        return True

    def _read_event(self, event: Any) -> bool:
        """A Responses event. Older SDKs leave events (or their ``response``) they do not model as plain
        data, so every field is read through :func:`field_of`: what cannot be read is passed through."""
        etype = field_of(event, "type") or ""
        seq = field_of(event, "sequence_number")
        if isinstance(seq, int):
            self.partial.sequence_number = seq
        if etype == "response.output_text.delta":
            delta = field_of(event, "delta")
            if isinstance(delta, str):
                self._parts.append(delta)
                self._tokens += 1
        elif etype in ("response.completed", "response.incomplete", "response.failed", "response.created"):
            response = field_of(event, "response")
            rid, model = field_of(response, "id"), field_of(response, "model")
            if isinstance(rid, str):
                self.ctx.response_id = rid
                self.partial.response_id = rid
            if isinstance(model, str):
                self.ctx.response_model = model
            reported = read_usage(field_of(response, "usage"))
            if reported is not None:
                self.ctx.usage = reported
                self.ctx.input_tokens = reported.input_tokens
                self.ctx.output_tokens = reported.output_tokens
                self.partial.usage = {"input_tokens": reported.input_tokens, "output_tokens": reported.output_tokens}
            if etype != "response.created":
                self.partial.finish_reason = etype.split(".", 1)[1]
        return True

    # ---------------------------------------------------------------- batched side work
    def flush(self, now: float | None = None) -> None:
        """Push the chunk count and inter-chunk gaps gathered since the last push to the recorder (live:
        at most every ``FLUSH_SECONDS`` and every ``FLUSH_EVERY`` chunks, so a slow stream shows within a second)."""
        self._next_flush = (time.monotonic() if now is None else now) + FLUSH_SECONDS
        gaps = self._gaps
        self._gaps = []
        self.pipeline.recorder.stream_chunks(self.ctx, self.ctx.chunks - self._flushed, gaps)
        self._flushed = self.ctx.chunks

    def _report(self, now: float, done: bool = False) -> None:
        self._next_progress = now + self._interval
        callback = self.on_progress
        if callback is None:
            return
        try:
            callback(self.progress(done))
        except Exception as exc:
            self.pipeline.recorder.telemetry_error("progress_callback", exc)

    def progress(self, done: bool = False) -> Any:
        """A :class:`~middleware.streaming.progress.Progress` snapshot."""
        ctx = self.ctx
        elapsed = ctx.elapsed
        first = ctx.first_chunk_at
        generating = time.monotonic() - first if first is not None else 0.0
        return snapshot(self._tokens, ctx.chunks, elapsed, generating, self._expected, done)

    def write_checkpoint(self) -> None:
        """Persist the request and the partial output (no-op without a store; never raises)."""
        store = self._store
        every = self.services.config.checkpoint_every_chunks
        self._next_ckpt = self.ctx.chunks + every if every > 0 else math.inf
        if store is None or self.checkpoint_id is None:
            return
        ctx = self.ctx
        try:
            body = dict(self._body)
            if ctx.background:
                body["background"] = True
            checkpoint = Checkpoint(
                id=self.checkpoint_id, operation=ctx.operation, model=ctx.model, body=body, text=self.text(),
                tokens=self._tokens, sequence_number=self.partial.sequence_number,
                response_id=self.partial.response_id,
                headers=replay_headers(ctx.request.headers if ctx.request is not None else {},
                                       self.services.config.checkpoint_replay_headers),
            )
        except Exception as exc:
            self.pipeline.recorder.telemetry_error("checkpoint", exc)
            return
        self._save(checkpoint)

    def _save(self, checkpoint: Checkpoint) -> None:
        store = self._store
        if store is None:
            return
        try:
            store.save(checkpoint, self.services.config.checkpoint_ttl_seconds)
            self.pipeline.recorder.checkpoint(self.ctx, store.backend, checkpoint.id)
        except Exception as exc:  # a Redis that failed is counted as a fault here, and logged once by its link
            self.pipeline.recorder.telemetry_error("checkpoint", exc, logged=isinstance(exc, CheckpointUnavailable))

    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    # ---------------------------------------------------------------- breaks and resumption
    def on_break(self, exc: Exception) -> ResumePlan | None:
        """A stream broke: the plan to resume it; None to end with the partial; else raises."""
        cause = interruption_cause(exc)
        if cause is None:
            raise exc
        ctx = self.ctx
        cfg = self.services.config
        recorder = self.pipeline.recorder
        text = self.text()
        if cause == "stall":
            recorder.stall(ctx, cfg.idle_timeout_seconds)
        recorder.interruption(ctx, cause, len(text))
        broken = self._children[-1] if self._children else ctx
        recorder.end_stream_attempt(broken, cause)
        if broken.received_tokens is None:  # its usage will never be reported: keep what it delivered
            broken.received_tokens = self._tokens - self._segment_start
        self._segment_start = self._tokens
        if self._seam is None:
            self._seam = self._last if self._last is not None else time.monotonic()
        self._last = None
        if self._store is not None:
            self.write_checkpoint()
        plan = self._plan() if cfg.resume and self._resumptions < cfg.max_resumptions else None
        if plan is None:
            self._give_up(exc, cause)
            return None
        self._resumptions += 1
        return plan

    def on_resume_failed(self, exc: Exception) -> ResumePlan | None:
        """The resumed request itself failed (after the pipeline's retries): try again or give up."""
        self.pipeline.recorder.resumption(self.ctx, n.RESUME_FAILURE, None, self.partial.sequence_number)
        cfg = self.services.config
        plan = self._plan() if self._resumptions < cfg.max_resumptions else None
        if plan is None:
            self._give_up(exc, interruption_cause(exc) or "resume_failed")
            return None
        self._resumptions += 1
        return plan

    def _plan(self) -> ResumePlan | None:
        ctx = self.ctx
        if ctx.operation == "chat":
            if self.partial.tool_calls:
                return None  # a half-written tool call cannot be continued as assistant text
            body = continuation_body(self._body, self.text(), self._tokens)
            return ResumePlan("chat", body=body) if body is not None else None
        rid, seq = self.partial.response_id, self.partial.sequence_number
        if ctx.operation == "responses" and rid and seq is not None and (
                ctx.background or self._body.get("background") is True):
            return ResumePlan("responses", response_id=rid, starting_after=seq)
        return None

    def _give_up(self, exc: Exception, cause: str) -> None:
        """Raise StreamInterrupted with the partial result, or end the call with it (return_partial)."""
        partial = self.snapshot_partial()
        error = StreamInterrupted(
            f"stream interrupted ({cause}) after {len(partial.text)} characters; "
            f"{self._resumptions} resumption(s) attempted",
            partial=partial, cause=cause, checkpoint_id=self.checkpoint_id,
        )
        if self.services.config.return_partial:
            self.finish(n.STREAM_END_ERROR, error)
            return None
        raise error from exc

    def snapshot_partial(self) -> PartialResult:
        """The partial result with the text so far filled in."""
        self.partial.text = self.text()
        self.partial.chunks = self.ctx.chunks
        return self.partial

    def resume(self, plan: ResumePlan) -> Any:
        """Send the resumed request (sync) and return its plain stream."""
        self._prepare_splice(plan)
        return self.pipeline.resume_sync(self.ctx, plan)

    async def aresume(self, plan: ResumePlan) -> Any:
        """Send the resumed request (async) and return its plain stream."""
        self._prepare_splice(plan)
        return await self.pipeline.resume_async(self.ctx, plan)

    def _prepare_splice(self, plan: ResumePlan) -> None:
        # A chat continuation is a new completion: its chunks get the original id and creation time,
        # and its opening role-only chunk is hidden (the caller already had one).
        if plan.kind == "chat" and self.partial.response_id is not None:
            self._splice = (self.partial.response_id, self._created)
            self._opening = True

    def adopt(self, child: CallContext) -> None:
        """Keep the context of a resumed request (its reservation is settled when the stream ends)."""
        self._children.append(child)

    def disown(self, child: CallContext) -> None:
        """A resumed request that failed before it streamed anything is no part of the stream's settlement."""
        if child in self._children:
            self._children.remove(child)

    # ---------------------------------------------------------------- the end, exactly once
    def finish(self, state: str, error: BaseException | None = None) -> None:
        """End the stream's call with its final state (idempotent)."""
        if self.done:
            return
        self.done = True
        ctx = self.ctx
        pipeline = self.pipeline
        try:
            pipeline.recorder.stream_chunks(ctx, ctx.chunks - self._flushed, self._gaps)
            self._flushed = ctx.chunks
            self._gaps = []
            self.snapshot_partial()
            if self.partial.finish_reason:
                ctx.finish_reasons = [self.partial.finish_reason]
            if pipeline.recorder.capture_content:
                ctx.output_text = self.partial.text
            current = self._children[-1] if self._children else ctx
            pipeline.recorder.end_stream_attempt(current, "stream_error" if state == n.STREAM_END_ERROR else None)
            pipeline.recorder.stream_closed(ctx, state)
            if self.on_progress is not None and state == n.STREAM_END_COMPLETED:
                self._report(time.monotonic(), done=True)
            self._after(state)
        finally:
            self._settle()
            pipeline.recorder.end_call(ctx, error)

    def _after(self, state: str) -> None:
        ctx = self.ctx
        store, checkpoint_id = self._store, self.checkpoint_id
        if state in (n.STREAM_END_COMPLETED, n.STREAM_END_CLOSED) and store is not None and checkpoint_id:
            self._delete(store, checkpoint_id)
        first = ctx.first_chunk_at
        if state == n.STREAM_END_COMPLETED and not self._children and first is not None and ctx.output_tokens:
            generating = time.monotonic() - first
            if generating > 0:
                self.services.adaptive.observe(ctx.model, first - ctx.started, ctx.output_tokens / generating)

    def _delete(self, store: Any, checkpoint_id: str) -> None:
        try:
            store.delete(checkpoint_id)
        except Exception as exc:
            self.pipeline.recorder.telemetry_error("checkpoint", exc, logged=isinstance(exc, CheckpointUnavailable))

    def _settle(self) -> None:
        """Settle through the pipeline's one rule: the last request against the reported usage."""
        self.pipeline.settle(self.ctx, self._children)


def _is_role_only(chunk: Any) -> bool:
    """The continuation's opening chunk (role, empty content): the caller already had one."""
    if chunk.usage is not None or len(chunk.choices) != 1:
        return False
    choice = chunk.choices[0]
    delta = choice.delta
    return bool(delta.role) and not delta.content and not delta.tool_calls and not choice.finish_reason


def _carries_only_usage(choices: Any) -> bool:
    """True when no choice carries a role, content, refusal, tool call, logprobs or finish reason."""
    for choice in choices or ():
        if choice.finish_reason or getattr(choice, "logprobs", None) is not None:
            return False
        delta = choice.delta
        if delta is not None and (delta.role or delta.content or delta.tool_calls or getattr(delta, "refusal", None)
                                  or getattr(delta, "function_call", None)):
            return False
    return True


def field_of(obj: Any, name: str) -> Any:
    """A field of an SDK object or of the plain mapping an older SDK leaves in its place (None when absent)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
