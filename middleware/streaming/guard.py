"""The stream guard: observes every chunk of a protected stream and ends its call exactly once.

``GuardedStream`` / ``GuardedAsyncStream`` subclass the SDK's ``Stream`` / ``AsyncStream`` (so
``isinstance`` checks and the SDK's ``stream()`` helpers keep working); the protected client hands
them to the SDK in place of the stream class it asked for. Per chunk the guard does only cheap
local work (a timestamp, a counter, the partial-text buffer); metrics are flushed in batches.
The call ends on completion, server error, early ``break``, ``close()``, context-manager exit or
garbage collection of an abandoned stream.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from openai import AsyncStream, Stream

from ..context import CallContext
from ..errors import PartialResult
from ..telemetry import names as n

if TYPE_CHECKING:
    from ..pipeline import Pipeline

T = TypeVar("T")

FLUSH_EVERY = 256

# httpx2 response -> observer, registered by the protected client when the response arrives.
OBSERVERS: weakref.WeakKeyDictionary[Any, StreamObserver] = weakref.WeakKeyDictionary()


class StreamObserver:
    """Per-stream state: progress, timing, partial result, and the single end of the call."""

    __slots__ = (
        "__weakref__", "_event_limit", "_flushed", "_gaps", "_last", "_parts", "ctx", "done", "on_progress",
        "partial", "pipeline",
    )

    def __init__(self, pipeline: Pipeline, ctx: CallContext, on_progress: Any = None) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.done = False
        self._last: float | None = None
        self._gaps: list[float] = []
        self._parts: list[str] = []
        self.partial = PartialResult()
        self._event_limit = pipeline.recorder._chunk_event_limit(ctx)
        self.on_progress = on_progress
        self._flushed = 0
        pipeline.recorder.stream_opened(ctx)

    # ---------------------------------------------------------------- per chunk
    def on_chunk(self, chunk: Any) -> bool:
        """Record one chunk; return False when the chunk must be hidden from the caller."""
        now = time.monotonic()
        ctx = self.ctx
        last = self._last
        if last is None:
            self.pipeline.recorder.first_chunk(ctx, now)
        else:
            self._gaps.append(now - last)
        self._last = now
        ctx.chunks += 1
        if ctx.chunks <= self._event_limit:
            self.pipeline.recorder.chunk_event(ctx, ctx.chunks, now)
        visible = self._read_chat(chunk) if ctx.operation == "chat" else self._read_event(chunk)
        if len(self._gaps) >= FLUSH_EVERY:
            self.flush()
        return visible

    def _read_chat(self, chunk: Any) -> bool:
        choices = chunk.choices
        if choices:
            choice = choices[0]
            delta = choice.delta
            content = delta.content if delta is not None else None
            if content:
                self._parts.append(content)
            if delta is not None and delta.tool_calls:
                for call in delta.tool_calls:
                    self.partial.tool_calls.append(call.model_dump(exclude_none=True))
            if choice.finish_reason:
                self.partial.finish_reason = choice.finish_reason
        usage = chunk.usage
        if usage is not None:
            self.ctx.input_tokens = usage.prompt_tokens
            self.ctx.output_tokens = usage.completion_tokens
            self.partial.usage = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
            if not choices and not self.ctx.include_usage_requested:
                return False
        if self.partial.response_id is None:
            self.partial.response_id = chunk.id
            self.ctx.response_id = chunk.id
            self.ctx.response_model = chunk.model
        return True

    def _read_event(self, event: Any) -> bool:
        etype = getattr(event, "type", "")
        seq = getattr(event, "sequence_number", None)
        if seq is not None:
            self.partial.sequence_number = seq
        if etype == "response.output_text.delta":
            self._parts.append(event.delta)
        elif etype in ("response.completed", "response.incomplete", "response.failed", "response.created"):
            response = event.response
            self.ctx.response_id = response.id
            self.partial.response_id = response.id
            self.ctx.response_model = response.model
            usage = response.usage
            if usage is not None:
                self.ctx.input_tokens = usage.input_tokens
                self.ctx.output_tokens = usage.output_tokens
                self.partial.usage = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
            if etype != "response.created":
                self.partial.finish_reason = etype.split(".", 1)[1]
        return True

    def flush(self) -> None:
        """Push the batched chunk count and inter-chunk gaps to the recorder."""
        gaps = self._gaps
        self._gaps = []
        self.pipeline.recorder.stream_chunks(self.ctx, self.ctx.chunks - self._flushed, gaps)
        self._flushed = self.ctx.chunks
        if self.on_progress is not None:
            try:
                self.on_progress(self.progress())
            except Exception as exc:
                self.pipeline.recorder.telemetry_error("progress_callback", exc)

    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def progress(self) -> dict[str, Any]:
        """Chunks so far, elapsed seconds and chunks per second."""
        elapsed = self.ctx.elapsed
        return {"chunks": self.ctx.chunks, "elapsed": elapsed,
                "chunks_per_second": self.ctx.chunks / elapsed if elapsed > 0 else 0.0}

    # ---------------------------------------------------------------- the end, exactly once
    def finish(self, state: str, error: BaseException | None = None) -> None:
        """End the stream's call with its final state (idempotent)."""
        if self.done:
            return
        self.done = True
        ctx = self.ctx
        try:
            self.pipeline.recorder.stream_chunks(ctx, ctx.chunks - self._flushed, self._gaps)
            self._flushed = ctx.chunks
            self._gaps = []
            self.partial.text = self.text()
            self.partial.chunks = ctx.chunks
            if self.partial.finish_reason:
                ctx.finish_reasons = [self.partial.finish_reason]
            if self.pipeline.recorder.capture_content:
                ctx.output_text = self.partial.text
            self.pipeline.recorder.stream_closed(ctx, state)
        finally:
            self.pipeline.settle(ctx)
            self.pipeline.recorder.end_call(ctx, error)


def _observer_for(response: Any) -> StreamObserver | None:
    try:
        return OBSERVERS.pop(response, None)
    except TypeError:
        return None


class GuardedStream(Stream[T]):
    """A ``Stream`` that reports every chunk and ends its call exactly once."""

    _mw: StreamObserver | None = None

    def __init__(self, *, cast_to: type[T], response: Any, client: Any, options: Any = None) -> None:
        super().__init__(cast_to=cast_to, response=response, client=client, options=options)
        self._mw = _observer_for(response)

    def __stream__(self) -> Iterator[T]:
        inner = super().__stream__()
        obs = self._mw
        if obs is None:
            yield from inner
            return
        try:
            for item in inner:
                if obs.on_chunk(item):
                    yield item
        except GeneratorExit:
            obs.finish(n.STREAM_END_CLOSED)
            raise
        except BaseException as exc:
            obs.finish(n.STREAM_END_ERROR, exc)
            raise
        obs.finish(n.STREAM_END_COMPLETED)

    def __iter__(self) -> Iterator[T]:
        try:
            yield from self._iterator
        except GeneratorExit:  # the caller left the loop early (break): the stream is over for it
            if self._mw is not None:
                self._mw.finish(n.STREAM_END_CLOSED)
            raise

    def close(self) -> None:
        """Close the response and end the call (closed early unless it already completed)."""
        if self._mw is not None:
            self._mw.finish(n.STREAM_END_CLOSED)
        super().close()

    def __del__(self) -> None:
        obs = self._mw
        if obs is not None and not obs.done:
            try:
                obs.finish(n.STREAM_END_ABANDONED)
            except Exception:
                pass


class GuardedAsyncStream(AsyncStream[T]):
    """An ``AsyncStream`` that reports every chunk and ends its call exactly once; close is awaited."""

    _mw: StreamObserver | None = None

    def __init__(self, *, cast_to: type[T], response: Any, client: Any, options: Any = None) -> None:
        super().__init__(cast_to=cast_to, response=response, client=client, options=options)
        self._mw = _observer_for(response)

    async def __stream__(self) -> AsyncIterator[T]:
        inner = super().__stream__()
        obs = self._mw
        if obs is None:
            async for item in inner:
                yield item
            return
        try:
            async for item in inner:
                if obs.on_chunk(item):
                    yield item
        except GeneratorExit:
            obs.finish(n.STREAM_END_CLOSED)
            raise
        except BaseException as exc:
            obs.finish(n.STREAM_END_ERROR, exc)
            raise
        obs.finish(n.STREAM_END_COMPLETED)

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for item in self._iterator:
                yield item
        except GeneratorExit:
            if self._mw is not None:
                self._mw.finish(n.STREAM_END_CLOSED)
            raise

    async def close(self) -> None:
        """Close the response (awaited) and end the call."""
        if self._mw is not None:
            self._mw.finish(n.STREAM_END_CLOSED)
        await super().close()

    def __del__(self) -> None:
        obs = self._mw
        if obs is not None and not obs.done:
            try:
                obs.finish(n.STREAM_END_ABANDONED)
            except Exception:
                pass
