"""Crash recovery: continue a stream from its checkpoint, in this or another process.

Chat: the checkpoint's request is re-sent with the partial output as a trailing assistant message
(the continuation strategy, see ``resumption.py``); the stream runs through the protected client
seeded with the checkpoint, so it keeps checkpointing under the same id and can itself be resumed.
Responses (background mode only): the stored response is streamed again after the checkpoint's
sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openai import AsyncStream, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ..errors import CheckpointNotFound, MiddlewareError
from .checkpoint import Checkpoint, CheckpointStore
from .forced import ChatAccumulator
from .observer import SEED, Seed
from .resumption import continuation_body, interruption_cause

DEFAULT_MAX_RESUMPTIONS = 3


@dataclass(frozen=True)
class Resumed:
    """The completed operation: the full text (checkpoint prefix included) and the result object."""

    checkpoint_id: str
    text: str
    result: Any
    """A ``ChatCompletion`` (chat; content is the full text) or the final ``Response`` (responses)."""


def _store(client: Any, store: CheckpointStore | None) -> tuple[CheckpointStore, int]:
    pipeline = getattr(client, "_middleware_pipeline", None)
    limit = pipeline.config.streaming.max_resumptions if pipeline is not None else DEFAULT_MAX_RESUMPTIONS
    if store is not None:
        return store, limit
    found = pipeline.streaming.store if pipeline is not None else None
    if found is None:
        raise CheckpointNotFound("no checkpoint store: pass store= or protect the client with checkpoint_dir set")
    return found, limit


def _chat_request(checkpoint: Checkpoint) -> tuple[dict[str, Any], Seed]:
    body = continuation_body(checkpoint.body, checkpoint.text, checkpoint.tokens)
    if body is None:
        raise MiddlewareError(f"checkpoint {checkpoint.id} cannot be continued (n > 1, prediction or audio)")
    return body, Seed(checkpoint.id, checkpoint.body, checkpoint.text, checkpoint.tokens)


def _chat_result(checkpoint: Checkpoint, acc: ChatAccumulator) -> Resumed:
    result = acc.result(ChatCompletion)
    text = checkpoint.text + acc.text()
    if result.choices:
        result.choices[0].message.content = text
    return Resumed(checkpoint.id, text, result)


def _responses_check(checkpoint: Checkpoint) -> tuple[str, int]:
    if not checkpoint.response_id or checkpoint.sequence_number is None or not checkpoint.body.get("background"):
        raise MiddlewareError(f"checkpoint {checkpoint.id}: only background Responses streams can be resumed")
    return checkpoint.response_id, checkpoint.sequence_number


class _EventFold:
    """Collects Responses events after the cursor: text deltas, the sequence number, the final response."""

    def __init__(self, checkpoint: Checkpoint, after: int) -> None:
        self.parts = [checkpoint.text]
        self.after = after
        self.final: Any = None

    def add(self, event: Any) -> None:
        seq = getattr(event, "sequence_number", None)
        if seq is not None:
            if seq <= self.after:
                return  # never duplicate an event already folded
            self.after = seq
        etype = getattr(event, "type", "")
        if etype == "response.output_text.delta":
            self.parts.append(event.delta)
        elif etype in ("response.completed", "response.incomplete", "response.failed"):
            self.final = event.response


def resume(client: Any, checkpoint_id: str, *, store: CheckpointStore | None = None) -> Resumed:
    """Continue the stream saved under ``checkpoint_id`` to its end; return the full text and result."""
    st, limit = _store(client, store)
    checkpoint = st.load(checkpoint_id)
    if checkpoint.operation == "chat":
        body, seed = _chat_request(checkpoint)
        token = SEED.set(seed)
        try:
            stream = client.post("/chat/completions", body=body, cast_to=ChatCompletion,
                                 options={"headers": checkpoint.headers}, stream=True,
                                 stream_cls=Stream[ChatCompletionChunk])
        finally:
            SEED.reset(token)
        acc = ChatAccumulator()
        for chunk in stream:
            acc.add(chunk)
        st.delete(checkpoint.id)
        return _chat_result(checkpoint, acc)
    rid, seq = _responses_check(checkpoint)
    fold = _EventFold(checkpoint, seq)
    for attempt in range(limit + 1):
        try:
            for event in client.responses.retrieve(rid, stream=True, starting_after=fold.after,
                                                   extra_headers=checkpoint.headers):
                fold.add(event)
            break
        except Exception as exc:
            if interruption_cause(exc) is None or attempt == limit:
                raise
    st.delete(checkpoint.id)
    return Resumed(checkpoint.id, "".join(fold.parts), fold.final)


async def aresume(client: Any, checkpoint_id: str, *, store: CheckpointStore | None = None) -> Resumed:
    """Async twin of :func:`resume`."""
    st, limit = _store(client, store)
    checkpoint = st.load(checkpoint_id)
    if checkpoint.operation == "chat":
        body, seed = _chat_request(checkpoint)
        token = SEED.set(seed)
        try:
            stream = await client.post("/chat/completions", body=body, cast_to=ChatCompletion,
                                       options={"headers": checkpoint.headers}, stream=True,
                                       stream_cls=AsyncStream[ChatCompletionChunk])
        finally:
            SEED.reset(token)
        acc = ChatAccumulator()
        async for chunk in stream:
            acc.add(chunk)
        st.delete(checkpoint.id)
        return _chat_result(checkpoint, acc)
    rid, seq = _responses_check(checkpoint)
    fold = _EventFold(checkpoint, seq)
    for attempt in range(limit + 1):
        try:
            events = await client.responses.retrieve(rid, stream=True, starting_after=fold.after,
                                                     extra_headers=checkpoint.headers)
            async for event in events:
                fold.add(event)
            break
        except Exception as exc:
            if interruption_cause(exc) is None or attempt == limit:
                raise
    st.delete(checkpoint.id)
    return Resumed(checkpoint.id, "".join(fold.parts), fold.final)
