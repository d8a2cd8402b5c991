"""One exception hierarchy for everything the middleware itself raises.

Upstream failures keep the SDK's own exception types (``openai.RateLimitError`` ...)
so that existing ``except`` clauses keep working; the middleware attaches its
attempt history to them (see :func:`attach_history`). Interrupted operations
carry what was already received (:class:`PartialResult`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import openai


class MiddlewareError(Exception):
    """Base class of every error raised by the middleware itself."""


class ConfigError(MiddlewareError, ValueError):
    """A configuration value is invalid.

    When raised for one setting, ``setting`` names it (``MIDDLEWARE_RPM``, ``StreamConfig.idle_timeout_seconds``),
    ``value`` is the value as shown in the message (credentials redacted) and ``allowed`` says what is allowed.
    """

    def __init__(self, message: str, *, setting: str | None = None, value: str | None = None,
                 allowed: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value
        self.allowed = allowed


class ThrottleTimeout(MiddlewareError):
    """The limiter would have to wait longer than the configured maximum to admit the call."""

    def __init__(self, message: str, *, needed_seconds: float, max_wait_seconds: float, reason: str) -> None:
        super().__init__(message)
        self.needed_seconds = needed_seconds
        self.max_wait_seconds = max_wait_seconds
        self.reason = reason


class RequestTooLarge(MiddlewareError):
    """The request can never fit: it is larger than the whole per-window limit."""

    def __init__(self, message: str, *, tokens: int, limit: float) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


class RetryAfterTooLong(MiddlewareError):
    """The server asked us to wait longer than the configured maximum retry-after."""

    def __init__(self, message: str, *, retry_after_seconds: float, max_retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.max_retry_after_seconds = max_retry_after_seconds


class CircuitOpenError(MiddlewareError):
    """The circuit breaker for this endpoint and model is open: the call failed fast."""

    def __init__(self, message: str, *, endpoint: str, model: str, retry_in_seconds: float) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.model = model
        self.retry_in_seconds = retry_in_seconds


@dataclass
class AttemptRecord:
    """One HTTP attempt of a call: what happened and how long we waited after it."""

    attempt: int
    outcome: str  # "success" | "retryable" | "terminal"
    reason: str
    status: int | None = None
    error_type: str | None = None
    delay_seconds: float = 0.0
    request_id: str | None = None


@dataclass
class PartialResult:
    """What a stream delivered before it was interrupted."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    chunks: int = 0
    response_id: str | None = None
    finish_reason: str | None = None
    sequence_number: int | None = None


class StreamInterrupted(MiddlewareError):
    """A stream broke and could not be resumed; ``partial`` holds everything received so far."""

    def __init__(self, message: str, *, partial: PartialResult, cause: str, checkpoint_id: str | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.cause = cause
        self.checkpoint_id = checkpoint_id


class MalformedResponse(MiddlewareError, openai.APIError):
    """The upstream answered with a body that cannot be parsed (cut short, or not the JSON it announced).

    An ``openai.APIError``, so existing ``except openai.APIError`` clauses catch it; it carries the
    status, the upstream request id and the first characters of the body. Retried like a server error.
    """

    def __init__(self, message: str, *, request: Any, status_code: int, request_id: str | None, excerpt: str) -> None:
        openai.APIError.__init__(self, message, request, body=None)
        self.status_code = status_code
        self.request_id = request_id
        self.excerpt = excerpt


class FileOperationError(MiddlewareError):
    """A file could not be read, chunked or written safely; ``reason`` is a closed code."""

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class CheckpointNotFound(MiddlewareError):
    """No checkpoint with that id exists (expired, completed or never written)."""


class RedisUnavailable(MiddlewareError):
    """Redis could not be used for a decision that admits a call, and ``RedisConfig.fallback`` is ``"fail"``.

    ``feature`` is the feature that needed it (``limiter``, ``retry``, ``budget``), ``reason`` why it could not
    (``timeout``, ``connection``, ``error``, or ``backoff``: skipped because Redis failed moments ago). With the
    default ``fallback="local"`` this is never raised: the feature decides with its local state instead.
    """

    def __init__(self, message: str, *, feature: str, reason: str) -> None:
        super().__init__(message)
        self.feature = feature
        self.reason = reason


HISTORY_ATTR = "middleware_attempts"


def attach_history(exc: BaseException, history: list[AttemptRecord]) -> None:
    """Attach the attempt history to an exception (SDK or ours) without changing its type."""
    try:
        setattr(exc, HISTORY_ATTR, list(history))
        if history:
            summary = ", ".join(f"#{a.attempt} {a.outcome}:{a.reason}" + (
                f" (+{a.delay_seconds:.2f}s)" if a.delay_seconds else "") for a in history)
            note = f"middleware attempts: {summary}"
            if hasattr(exc, "add_note"):
                exc.add_note(note)
            else:  # Python 3.10: the attribute add_note() would fill
                noted: Any = exc
                noted.__notes__ = [*getattr(exc, "__notes__", []), note]
    except Exception:  # an exception type that refuses attributes: the history is best effort
        pass


def attempt_history(exc: BaseException) -> list[AttemptRecord]:
    """The attempt history attached to an exception, or an empty list."""
    value = getattr(exc, HISTORY_ATTR, None)
    return list(value) if isinstance(value, list) else []
