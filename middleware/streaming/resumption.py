"""Resumption: how a broken stream continues, and how resumed requests pass through the pipeline.

A resumed request is *part of the original call*: it runs through the same limiter and retry loop,
but under a child context that shares the call's span, so its attempts appear as child spans of
the original call span and it never opens (or ends) a call of its own: the request counter and
the operation duration count the call once. The stream guard sets :data:`RESUMING` around the SDK
call it makes (``chat.completions.create`` / ``responses.retrieve``); the protected client sees it
and routes that request here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx2
from openai import APIConnectionError, APIError, APITimeoutError

from ..context import CallContext

# Chat parameters a continuation cannot honour (documented limits of the strategy).
_NOT_CONTINUABLE = ("prediction", "audio")


@dataclass
class ResumeSlot:
    """Set while the guard issues a resumed request: the parent call and the child contexts made."""

    parent: CallContext
    children: list[CallContext] = field(default_factory=list)


RESUMING: ContextVar[ResumeSlot | None] = ContextVar("middleware_resuming", default=None)


def interruption_cause(exc: BaseException) -> str | None:
    """Classify a mid-stream failure: stall, connection, server_error, malformed; None: not a break."""
    if isinstance(exc, APITimeoutError | httpx2.TimeoutException):
        return "stall"
    if isinstance(exc, APIConnectionError | httpx2.TransportError):
        return "connection"
    if isinstance(exc, APIError):
        return "server_error"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return "malformed"
    return None


def continuation_body(body: dict[str, Any], text: str, tokens_so_far: int) -> dict[str, Any] | None:
    """The chat request that continues ``text``: original messages + an assistant message holding it.

    The remaining output budget is the original max minus the tokens already received. None when
    the body cannot be continued this way (n > 1, predicted outputs, audio ...).
    """
    if body.get("n") not in (None, 1) or any(body.get(k) is not None for k in _NOT_CONTINUABLE):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    new = dict(body)
    new["messages"] = [*messages, {"role": "assistant", "content": text}]
    new["stream"] = True
    new["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int):
            new[key] = max(1, value - tokens_so_far)
    return new


def child_context(parent: CallContext, body: dict[str, Any]) -> CallContext:
    """A context for one resumed request: the parent's span and model, its own reservation and history."""
    child = dataclasses.replace(
        parent, body=body, stream=True, history=[], reservation=None, estimate=None, headers=None,
        status_code=None, input_tokens=None, output_tokens=None, ended=False, settled=False,
    )
    child.resumption_of = parent
    return child


def _prepare(pipeline: Any, slot: ResumeSlot, api_key: str, options: Any) -> tuple[CallContext, Any, Any, int]:
    body = options.json_data if isinstance(options.json_data, dict) else {}
    child = child_context(slot.parent, body)
    slot.children.append(child)
    key = pipeline.limiter_key(api_key, child.model)
    tokens = 0
    if body:
        try:
            est = pipeline.estimator.estimate(child.operation, child.model, body)
            tokens = est.prompt_tokens + int(est.max_output_tokens or 0)
        except Exception as exc:
            pipeline.recorder.telemetry_error("resume_estimate", exc)
    update: dict[str, Any] = {"max_retries": 0}
    return child, key, options.model_copy(update=update), tokens


def send_resumption_sync(pipeline: Any, slot: ResumeSlot, api_key: str, options: Any,
                         send: Callable[[Any], Any]) -> Any:
    """Run one resumed request through the limiter and the retry loop (sync)."""
    child, key, opts, tokens = _prepare(pipeline, slot, api_key, options)
    return pipeline.run_sync(child, key, tokens, opts, send)


async def send_resumption_async(pipeline: Any, slot: ResumeSlot, api_key: str, options: Any,
                                send: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run one resumed request through the limiter and the retry loop (async)."""
    child, key, opts, tokens = _prepare(pipeline, slot, api_key, options)
    return await pipeline.run_async(child, key, tokens, opts, send)
