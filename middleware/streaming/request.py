"""Request-side streaming decisions: stream options, the idle timeout, forced streaming bodies and the
reassembly of a forced stream.

Idle timeout, not total timeout: the HTTP library's read timeout is an *inactivity* limit (the
longest wait for the next bytes), so a healthy stream that keeps delivering chunks may run for an
hour, while a stream that goes silent fails after ``idle_timeout_seconds`` and is resumed. A total
deadline (``asyncio.wait_for``, a proxy's request timeout) would instead kill every operation
longer than the deadline, however healthy.
"""

from __future__ import annotations

from typing import Any

from ..config import StreamConfig
from ..context import CallContext
from .forced import ChatAccumulator

CONNECT_TIMEOUT = 5.0


def attempt_changes(config: StreamConfig, ctx: CallContext, request: Any
                    ) -> tuple[dict[str, Any] | None, tuple[float, float] | None]:
    """What a streamed call changes in its request: a new body (usage on chat streams, background for
    Responses when configured), or None; the idle timeout (read, connect), or None when the caller chose one."""
    body = request.body
    new_body: dict[str, Any] | None = None
    if ctx.operation == "chat" and body:
        stream_options = body.get("stream_options")
        # Usage is asked for unless the caller decided (include_usage set) or sent stream_options of a shape
        # the API refuses (left as sent: the API answers it, as it would without the middleware).
        if stream_options is None or (isinstance(stream_options, dict) and "include_usage" not in stream_options):
            ctx.include_usage_requested = False
            new_body = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
    elif ctx.operation == "responses" and body:
        ctx.background = body.get("background") is True
        if config.force_background and "background" not in body and body.get("store") is not False:
            new_body = {**body, "background": True}
            ctx.background = True
    idle = None if request.caller_chose_timeout() else (config.idle_timeout_seconds, CONNECT_TIMEOUT)
    return new_body, idle


def forced_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body of a non-streaming chat call sent as a stream (with usage, to settle it)."""
    stream_options = body.get("stream_options")
    options = stream_options if isinstance(stream_options, dict) else {}
    return {**body, "stream": True, "stream_options": {**options, "include_usage": True}}


def collect(stream: Any, cast_to: Any) -> Any:
    """Consume a forced stream into the ``ChatCompletion`` the caller asked for."""
    acc = ChatAccumulator()
    for chunk in stream:
        acc.add(chunk)
    return acc.result(cast_to)


async def acollect(stream: Any, cast_to: Any) -> Any:
    """Async twin of :func:`collect`."""
    acc = ChatAccumulator()
    async for chunk in stream:
        acc.add(chunk)
    return acc.result(cast_to)
