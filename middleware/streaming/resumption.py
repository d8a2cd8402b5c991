"""Resumption: what a broken stream's failure means, and the request that continues a chat stream.

A resumed request is *part of the original call*: the pipeline sends it through the same limiter
and retry loop under a child context that shares the call's span (``Pipeline.resume_sync`` /
``resume_async``), so its attempts appear as child spans of the call span and the call is counted
once, however many resumptions it took.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from ..sdk import compat

# Chat parameters a continuation cannot honour (documented limits of the strategy).
_NOT_CONTINUABLE = ("prediction", "audio")


def interruption_cause(exc: BaseException) -> str | None:
    """Classify a mid-stream failure: stall, connection, server_error, malformed; None: not a break."""
    if isinstance(exc, compat.timeout_errors()):
        return "stall"
    if isinstance(exc, compat.connection_errors() + compat.transport_errors()):
        return "connection"
    if isinstance(exc, openai.APIError):
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
    stream_options = body.get("stream_options")
    new["stream_options"] = {**(stream_options if isinstance(stream_options, dict) else {}), "include_usage": True}
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int):
            new[key] = max(1, value - tokens_so_far)
    return new
