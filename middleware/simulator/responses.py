"""``/v1/responses``: create (stream, background), retrieve, resume with ``starting_after``, cancel.

Every generation that streams or runs in the background is a producer task writing numbered
events into a :class:`ResponseRecord`; connections relay them. A background producer keeps
going when its client disconnects; a foreground one is cancelled with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .call import Call, Services, StreamFaults
from .exchange import Exchange
from .faults import Fault
from .generation import generate as generate_output
from .generation import split_trailing_assistant
from .response_events import ResponseRun
from .shapes import check_responses, problem


class ResponseRecord:
    """A stored response: its run, the events produced so far, and who waits for more."""

    def __init__(self, run: ResponseRun, background: bool) -> None:
        self.run = run
        self.background = background
        self.events: list[tuple[bytes, bool]] = []
        self.finished = False
        self.cancelled = False
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def append(self, frame: bytes, is_delta: bool) -> None:
        """Add one event and wake the relays."""
        self.events.append((frame, is_delta))
        self._wake()

    def close(self) -> None:
        """No more events will come."""
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Wait for the next event or the end."""
        await self._changed.wait()


class ResponseStore:
    """Bounded in-memory store of responses by id (oldest finished ones are evicted first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, ResponseRecord] = OrderedDict()

    def add(self, record: ResponseRecord) -> None:
        """Store ``record``, evicting old finished records beyond capacity."""
        self._records[record.run.response_id] = record
        if len(self._records) > self.capacity:
            for key in [k for k, r in self._records.items() if r.finished][: len(self._records) - self.capacity]:
                del self._records[key]

    def get(self, response_id: str) -> ResponseRecord | None:
        """The record of ``response_id``, if stored."""
        return self._records.get(response_id)


def _normalise_input(body: Mapping[str, Any]) -> list[Any]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    return list(raw) if isinstance(raw, list) else []


def _schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        schema: Mapping[str, Any] = fmt.get("schema") or {"type": "object"}
        return schema
    if fmt.get("type") == "json_object":
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def validate(body: Mapping[str, Any]) -> str | None:
    """An error message when the request cannot be served."""
    if not _normalise_input(body):
        return "'input' must be a non-empty string or array."
    return problem(check_responses, body)


async def _produce(svc: Services, call: Call, record: ResponseRecord) -> None:
    run = record.run
    sent = 0
    try:
        for frame in run.opening():
            record.append(frame, False)
        pacer = svc.latency.pacer()
        for index, piece in enumerate(run.pieces):
            await pacer.before(index)
            if record.cancelled:
                return
            record.append(run.delta(piece), True)
            sent += 1
        for frame in run.closing():
            record.append(frame, False)
        sent = run.gen.completion_tokens
    finally:
        record.close()
        call.settle(sent, record.run.snapshot["status"] in ("completed", "incomplete"))


async def relay(ex: Exchange, record: ResponseRecord, after: int, fault: Fault | None, svc: Services) -> bool:
    """Stream ``record``'s events with sequence numbers above ``after``; ``False`` if the connection ended early."""
    faults = StreamFaults(fault, len(record.run.pieces), svc.latency)
    ex.start_sse()
    index = max(0, after + 1)
    deltas = 0
    checked = -1
    previous_delta = False
    while True:
        while index < len(record.events):
            frame, is_delta = record.events[index]
            if (is_delta or previous_delta) and checked != deltas:
                checked = deltas
                if not await faults.after(ex, deltas):
                    return False
            if ex.conn.client_gone:
                return False
            ex.sse(frame)
            index += 1
            deltas += is_delta
            previous_delta = is_delta
            await ex.conn.drain()
        if record.finished:
            break
        await record.changed()
    ex.end_sse()
    return True


class ResponsesEndpoint:
    """Handlers of the ``/v1/responses`` routes."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.store = ResponseStore(svc.config.max_stored_responses)

    async def create(self, call: Call) -> None:
        """``POST /v1/responses``."""
        body = call.body
        conversation, prefix = split_trailing_assistant(_normalise_input(body))
        schema = _schema(body)
        key = {"instructions": body.get("instructions"), "input": conversation, "schema": schema}
        max_new = body.get("max_output_tokens")
        gen = generate_output(self.svc, call, key, prefix, max_new if isinstance(max_new, int) else None, schema)
        background = bool(body.get("background"))
        run = ResponseRun(body, call.model, gen, call.prompt_tokens, background)
        ex = call.ex
        if not background and not body.get("stream"):
            await self.svc.latency.sleep(self.svc.latency.pacer().total(len(run.pieces)))
            run.finish()
            self.store.add(_finished_record(run))
            if call.fault is not None and call.fault.cuts_json:
                await ex.send_truncated_json(run.snapshot, whole_length=call.fault.truncated_json)
                call.settle(gen.completion_tokens, False)
                return
            ex.send_json(200, run.snapshot)
            call.settle(gen.completion_tokens, True)
            return
        record = ResponseRecord(run, background)
        self.store.add(record)
        record.task = asyncio.get_running_loop().create_task(_produce(self.svc, call, record))
        if not body.get("stream"):
            ex.send_json(200, {**run.snapshot, "status": "queued"})
            return
        completed = await relay(ex, record, -1, call.fault, self.svc)
        if not completed and not background:
            await _stop(record)

    async def retrieve(self, ex: Exchange, response_id: str) -> None:
        """``GET /v1/responses/{id}`` (``?stream=true&starting_after=N`` resumes the events)."""
        record = self.store.get(response_id)
        if record is None:
            _not_found(ex, response_id)
            return
        query = ex.request.query
        if query.get("stream", "").lower() not in ("true", "1"):
            ex.send_json(200, record.run.snapshot)
            return
        if not record.events:
            ex.send_error(400, "Only background responses can be streamed again.", "invalid_request_error", None)
            return
        try:
            after = int(query.get("starting_after", "-1"))
        except ValueError:
            message = "starting_after must be an integer."
            ex.send_error(400, message, "invalid_request_error", None, param="starting_after")
            return
        await relay(ex, record, after, None, self.svc)

    async def cancel(self, ex: Exchange, response_id: str) -> None:
        """``POST /v1/responses/{id}/cancel``: stop a background generation."""
        record = self.store.get(response_id)
        if record is None:
            _not_found(ex, response_id)
            return
        if not record.background:
            ex.send_error(400, "Only responses created with background=true can be cancelled.",
                          "invalid_request_error", None)
            return
        if not record.finished:
            record.run.cancel()
            await _stop(record)
        ex.send_json(200, record.run.snapshot)


async def _stop(record: ResponseRecord) -> None:
    record.cancelled = True
    if record.task is not None and not record.task.done():
        record.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await record.task


def _finished_record(run: ResponseRun) -> ResponseRecord:
    record = ResponseRecord(run, False)
    record.finished = True
    return record


def _not_found(ex: Exchange, response_id: str) -> None:
    ex.send_error(404, f"Response with id '{response_id}' not found.", "invalid_request_error", None)
