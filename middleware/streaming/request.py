"""Request-side integration of streaming into the protected client: stream options, the idle
timeout, forced streaming and the reassembly of a forced stream.

Idle timeout, not total timeout: httpx's read timeout is an *inactivity* limit (the longest wait
for the next bytes), so a healthy stream that keeps delivering chunks may run for an hour, while a
stream that goes silent fails after ``idle_timeout_seconds`` and is resumed. A total deadline
(``asyncio.wait_for``, a proxy's request timeout) would instead kill every operation longer than
the deadline, however healthy: a 10-minute limit ends a 20-minute generation at 10 minutes.
"""

from __future__ import annotations

from typing import Any

import httpx2
from openai import NotGiven
from openai._constants import DEFAULT_TIMEOUT, RAW_RESPONSE_HEADER
from openai.types.chat import ChatCompletion

from ..context import CallContext
from .forced import ChatAccumulator, force_reason

CONNECT_TIMEOUT = 5.0


def stream_update(config: Any, ctx: CallContext, options: Any, client_timeout: Any) -> dict[str, Any]:
    """Option changes for a streamed attempt: usage on chat streams, background for Responses
    (when configured), and the idle timeout unless the caller chose a timeout."""
    update: dict[str, Any] = {}
    body = ctx.body
    new_body: dict[str, Any] | None = None
    if ctx.operation == "chat":
        stream_options = body.get("stream_options")
        if not isinstance(stream_options, dict) or "include_usage" not in stream_options:
            ctx.include_usage_requested = False
            new_body = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
    elif ctx.operation == "responses":
        ctx.background = body.get("background") is True
        if config.force_background and "background" not in body and body.get("store") is not False:
            new_body = {**body, "background": True}
            ctx.background = True
    if new_body is not None:
        update["json_data"] = new_body
    caller_timeout = not isinstance(options.timeout, NotGiven) or client_timeout != DEFAULT_TIMEOUT
    if not caller_timeout:
        update["timeout"] = httpx2.Timeout(config.idle_timeout_seconds, connect=CONNECT_TIMEOUT)
    return update


def force_stream(pipeline: Any, ctx: CallContext, cast_to: Any, options: Any) -> Any | None:
    """Options that send this non-streaming chat call as a stream, or None to leave it alone.

    Only the plain ``create`` path is forced: raw-response paths (``with_raw_response``,
    ``with_streaming_response``) and ``parse()`` (a post-parser) keep their non-streamed response.
    """
    if ctx.operation != "chat" or cast_to is not ChatCompletion:
        return None
    if not isinstance(options.post_parser, NotGiven):
        return None
    headers = options.headers if isinstance(options.headers, dict) else {}
    if any(k.lower() == RAW_RESPONSE_HEADER.lower() for k in headers):
        return None
    services = pipeline.streaming
    reason = force_reason(services.config, services.adaptive, ctx.model, ctx.body)
    if reason is None:
        return None
    stream_options = ctx.body.get("stream_options") or {}
    body = {**ctx.body, "stream": True, "stream_options": {**stream_options, "include_usage": True}}
    ctx.body = body
    ctx.stream = True
    ctx.forced_stream = True
    pipeline.recorder.forced_stream(ctx, reason)
    return options.model_copy(update={"json_data": body})


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
