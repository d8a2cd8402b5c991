"""Crash recovery: continue a stream from its checkpoint, in this or another process.

Chat: the checkpoint's request is re-sent with the partial output as a trailing assistant message
(the continuation strategy, see ``resumption.py``). Responses (background mode only): the stored
response is streamed again after the checkpoint's sequence number. Either way the request is one
call of the pipeline *seeded* with the checkpoint: it is admitted, retried and observed like any
other, keeps checkpointing under the same id, and is itself resumed if it breaks again.

Observed as one ``resume_checkpoint`` span (INTERNAL) around the whole operation, loading the checkpoint
included: the call's span is its child; the span carries the checkpoint id, the operation and model, and the
characters (and Responses sequence number) it continues from, and ends ERROR with ``error.type`` when the
operation fails. One INFO log record (``checkpoint_resumed``) says that the stream is continued, with the
span's ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ..errors import CheckpointNotFound, MiddlewareError
from ..sdk import SdkRequest, new_request, pipeline_attached
from ..telemetry import names as n
from .checkpoint import Checkpoint, CheckpointStore, CheckpointUnavailable
from .forced import ChatAccumulator
from .observer import Seed, field_of
from .resumption import continuation_body


@dataclass(frozen=True)
class Resumed:
    """The completed operation: the full text (checkpoint prefix included) and the result object."""

    checkpoint_id: str
    text: str
    result: Any
    """A ``ChatCompletion`` (chat; content is the full text) or the final ``Response`` (responses)."""


class _ChatFold:
    """Folds the continuation's chunks; the result's content is the checkpoint text plus the new text."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.acc = ChatAccumulator()

    def add(self, chunk: Any) -> None:
        self.acc.add(chunk)

    def result(self) -> Resumed:
        result = self.acc.result(ChatCompletion)
        text = self.checkpoint.text + self.acc.text()
        if result.choices:
            result.choices[0].message.content = text
        return Resumed(self.checkpoint.id, text, result)


class _EventFold:
    """Collects Responses events after the cursor: text deltas and the final response (never an event twice)."""

    def __init__(self, checkpoint: Checkpoint, after: int) -> None:
        self.checkpoint = checkpoint
        self.parts = [checkpoint.text]
        self.after = after
        self.final: Any = None

    def add(self, event: Any) -> None:
        seq = field_of(event, "sequence_number")
        if isinstance(seq, int):
            if seq <= self.after:
                return
            self.after = seq
        etype = field_of(event, "type") or ""
        if etype == "response.output_text.delta":
            delta = field_of(event, "delta")
            self.parts.append(delta if isinstance(delta, str) else "")
        elif etype in ("response.completed", "response.incomplete", "response.failed"):
            self.final = field_of(event, "response")

    def result(self) -> Resumed:
        return Resumed(self.checkpoint.id, "".join(self.parts), self.final)


def _protected(client: Any) -> Any:
    if pipeline_attached(client) is not None:
        return client
    from ..client import protect

    return protect(client)


def _store(pipeline: Any, store: CheckpointStore | None) -> CheckpointStore:
    found = store if store is not None else pipeline.streaming.store
    if found is None:
        raise CheckpointNotFound("no checkpoint store: pass store= or protect the client with checkpoint_dir set")
    return found


def _request(client: Any, checkpoint: Checkpoint) -> tuple[SdkRequest, Seed, _ChatFold | _EventFold]:
    if checkpoint.operation == "chat":
        body = continuation_body(checkpoint.body, checkpoint.text, checkpoint.tokens)
        if body is None:
            raise MiddlewareError(f"checkpoint {checkpoint.id} cannot be continued (n > 1, prediction or audio)")
        request = new_request(client, method="post", url="/chat/completions", route="/chat/completions",
                              cast_to=ChatCompletion, body=body, headers=checkpoint.headers,
                              stream_chunk=ChatCompletionChunk)
        seed = Seed(checkpoint.id, checkpoint.body, checkpoint.text, checkpoint.tokens)
        return request, seed, _ChatFold(checkpoint)
    if checkpoint.operation != "responses" or not checkpoint.response_id or checkpoint.sequence_number is None \
            or checkpoint.body.get("background") is not True:
        raise MiddlewareError(f"checkpoint {checkpoint.id}: only chat and background Responses streams can be resumed")
    from openai.types.responses import Response, ResponseStreamEvent

    after = checkpoint.sequence_number
    request = new_request(client, method="get", url=f"/responses/{checkpoint.response_id}",
                          route="/responses/{response_id}", cast_to=Response,
                          params={"stream": True, "starting_after": after}, headers=checkpoint.headers,
                          stream_chunk=ResponseStreamEvent)
    seed = Seed(checkpoint.id, checkpoint.body, checkpoint.text, checkpoint.tokens,
                response_id=checkpoint.response_id, sequence_number=after)
    return request, seed, _EventFold(checkpoint, after)


def _continued(pipeline: Any, span: Any, checkpoint: Checkpoint) -> None:
    """Report that the stream is continued from ``checkpoint`` (span attributes and a log record)."""
    pipeline.recorder.checkpoint_resumed(span, {
        n.A_CHECKPOINT_ID: checkpoint.id, n.A_OPERATION: checkpoint.operation, n.A_REQUEST_MODEL: checkpoint.model,
        n.A_PARTIAL_CHARS: checkpoint.chars, n.A_SEQUENCE: checkpoint.sequence_number,
    })


def _forget(pipeline: Any, store: CheckpointStore, checkpoint_id: str) -> None:
    """Delete a checkpoint once its stream completed; a store that fails then is counted, not raised (the
    checkpoint expires by its TTL, and the caller has the whole result)."""
    try:
        store.delete(checkpoint_id)
    except Exception as exc:
        pipeline.recorder.telemetry_error("checkpoint", exc, logged=isinstance(exc, CheckpointUnavailable))


def resume(client: Any, checkpoint_id: str, *, store: CheckpointStore | None = None) -> Resumed:
    """Continue the stream saved under ``checkpoint_id`` to its end; return the full text and result."""
    client = _protected(client)
    pipeline = pipeline_attached(client)
    st = _store(pipeline, store)
    with pipeline.recorder.operation_span(n.SPAN_RESUME_CHECKPOINT, {n.A_CHECKPOINT_ID: checkpoint_id}) as span:
        checkpoint = st.load(checkpoint_id)
        request, seed, fold = _request(client, checkpoint)
        _continued(pipeline, span, checkpoint)
        for item in pipeline.call_sync(request, seed=seed):
            fold.add(item)
        _forget(pipeline, st, checkpoint.id)
        return fold.result()


async def aresume(client: Any, checkpoint_id: str, *, store: CheckpointStore | None = None) -> Resumed:
    """Async twin of :func:`resume`."""
    client = _protected(client)
    pipeline = pipeline_attached(client)
    st = _store(pipeline, store)
    with pipeline.recorder.operation_span(n.SPAN_RESUME_CHECKPOINT, {n.A_CHECKPOINT_ID: checkpoint_id}) as span:
        checkpoint = st.load(checkpoint_id)
        request, seed, fold = _request(client, checkpoint)
        _continued(pipeline, span, checkpoint)
        async for item in await pipeline.call_async(request, seed=seed):
            fold.add(item)
        _forget(pipeline, st, checkpoint.id)
        return fold.result()
