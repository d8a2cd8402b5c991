"""Failure classification: is an exception worth retrying, and why (a closed set of reasons)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openai

from middleware.errors import MalformedResponse, MiddlewareError, StreamInterrupted
from middleware.sdk import compat

from .retry_after import parse_retry_after

RETRYABLE_REASONS: frozenset[str] = frozenset({
    "rate_limit", "server_error", "timeout", "connection", "conflict", "request_timeout",
    "should_retry_header", "stream_broken", "malformed_response",
})
CANCELLED = "cancelled"  # the caller cancelled the attempt (CancelledError, KeyboardInterrupt): no verdict
TERMINAL_REASONS: frozenset[str] = frozenset({
    "insufficient_quota", "billing", "request_too_large", "bad_request", "auth", "permission", "not_found",
    "unprocessable", "content_policy", "should_not_retry_header", "other", CANCELLED,
})
REASONS: frozenset[str] = RETRYABLE_REASONS | TERMINAL_REASONS
# Never retried, whatever the configuration or an ``x-should-retry: true`` header says.
NEVER_RETRY: frozenset[str] = frozenset({"insufficient_quota", "billing", "request_too_large",
                                         "should_not_retry_header", CANCELLED})
# Terminal by default, but a positive ``RetryConfig.per_class`` entry opts them in to retries (as LiteLLM allows).
OPT_IN_REASONS: frozenset[str] = frozenset({"bad_request", "auth", "permission", "not_found", "unprocessable",
                                            "content_policy"})
# Failures of the upstream itself: the ones a circuit breaker counts.
UPSTREAM_FAILURES: frozenset[str] = frozenset({"server_error", "timeout", "connection", "stream_broken",
                                               "malformed_response"})

_BILLING_CODES = frozenset({"billing_hard_limit_reached", "billing_not_active", "access_terminated",
                            "account_deactivated"})
_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "responsibleaipolicyviolation"})
_TOO_LARGE_CODES = frozenset({"context_length_exceeded", "request_too_large"})
_BY_STATUS = {400: "bad_request", 401: "auth", 403: "permission", 404: "not_found", 408: "request_timeout",
              409: "conflict", 413: "request_too_large", 422: "unprocessable", 429: "rate_limit"}
_TOO_LARGE_MESSAGE = re.compile(r"request too large", re.IGNORECASE)


@dataclass(frozen=True)
class FailureClass:
    """What went wrong with one attempt, in retry terms."""

    retryable: bool
    reason: str
    status: int | None = None
    retry_after_seconds: float | None = None
    rate_limit_resource: str | None = None
    error_type: str = "Exception"
    request_id: str | None = None
    rate_limit_limit: float | None = None  # the refused resource's limit (``x-ratelimit-limit-*`` or "Limit N")

    @property
    def counts_for_breaker(self) -> bool:
        """True for upstream failures (5xx, timeouts, connection): not client errors nor 429s."""
        return self.reason in UPSTREAM_FAILURES or (self.status is not None and self.status >= 500)


def classify(exc: BaseException) -> FailureClass:
    """Classify an exception raised by one attempt (openai, httpx2 or any other)."""
    name = type(exc).__name__
    response = _response_of(exc)
    if response is not None:
        return _classify_response(exc, response, name)
    if isinstance(exc, compat.timeout_errors()):
        return FailureClass(True, "timeout", error_type=name)
    if isinstance(exc, compat.connection_errors()):
        return FailureClass(True, "connection", error_type=name)
    if isinstance(exc, compat.broken_stream_errors()):
        return FailureClass(True, "stream_broken", error_type=name)
    if isinstance(exc, MalformedResponse):
        return FailureClass(True, "malformed_response", exc.status_code, error_type=name, request_id=exc.request_id)
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return FailureClass(False, "content_policy", error_type=name)
    if isinstance(exc, StreamInterrupted):
        return FailureClass(False, "stream_broken", error_type=name)
    if isinstance(exc, openai.APIError) and not isinstance(exc, MiddlewareError):
        # An error event inside a stream (no HTTP status): terminal only if its body says so.
        terminal = _body_reason(exc.body, None)
        return FailureClass(terminal is None, terminal or "stream_broken", error_type=name)
    return FailureClass(False, "other", error_type=name)


def _response_of(exc: BaseException) -> Any | None:
    return compat.response_of(exc)


def _classify_response(exc: BaseException, response: Any, name: str) -> FailureClass:
    status = response.status_code
    headers = response.headers
    body = exc.body if isinstance(exc, openai.APIError) else _json_body(response)
    reason = _body_reason(body, status) or _status_reason(status)
    resource = _rate_limit_resource(body) if reason == "rate_limit" else None
    limit = _rate_limit_limit(body, headers, resource) if reason == "rate_limit" else None
    retryable = reason in RETRYABLE_REASONS
    should_retry = headers.get("x-should-retry", "").strip().lower()
    if should_retry == "false" and retryable:
        reason, retryable = "should_not_retry_header", False
    elif should_retry == "true" and not retryable and reason not in NEVER_RETRY:
        reason, retryable = "should_retry_header", True
    request_id = getattr(exc, "request_id", None) or headers.get("x-request-id")
    return FailureClass(retryable, reason, status, parse_retry_after(headers), resource, name, request_id, limit)


def _status_reason(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _BY_STATUS.get(status, "other")


def _body_reason(body: object, status: int | None) -> str | None:
    """A reason read from the error body that takes precedence over the status code, or None."""
    code, kind, message = _error_fields(body)
    tags = {code.lower(), kind.lower()}
    if "insufficient_quota" in tags:
        return "insufficient_quota"
    if tags & _BILLING_CODES:
        return "billing"
    if tags & _TOO_LARGE_CODES or (_TOO_LARGE_MESSAGE.search(message) and (status is None or status < 500)):
        return "request_too_large"
    if tags & _CONTENT_POLICY_CODES or _inner_code(body).lower() in _CONTENT_POLICY_CODES:
        return "content_policy"
    return None


def _rate_limit_resource(body: object) -> str | None:
    _, kind, message = _error_fields(body)
    for resource in ("tokens", "requests"):
        if kind.lower().startswith(resource) or f"on {resource} per" in message.lower():
            return resource
    return None


_LIMIT_IN_MESSAGE = re.compile(r"\bLimit (\d+(?:\.\d+)?)")


def _rate_limit_limit(body: object, headers: Mapping[str, str], resource: str | None) -> float | None:
    """The refused resource's limit: its ``x-ratelimit-limit-*`` header, else OpenAI's "Limit N" message."""
    for name in (resource,) if resource else ("tokens", "requests"):
        raw = headers.get(f"x-ratelimit-limit-{name}")
        try:
            value = float(raw) if raw is not None else None
        except ValueError:
            value = None
        if value is not None and value > 0:
            return value
    match = _LIMIT_IN_MESSAGE.search(_error_fields(body)[2])
    return float(match.group(1)) if match else None


def _error_object(body: object) -> Mapping[str, Any] | None:
    if isinstance(body, Mapping):
        inner = body.get("error")
        return inner if isinstance(inner, Mapping) else body
    return None


def _error_fields(body: object) -> tuple[str, str, str]:
    """(code, type, message) of an OpenAI error body, inner or outer shape; empty strings when absent."""
    error = _error_object(body)
    if error is None:
        return "", "", body if isinstance(body, str) else ""
    return str(error.get("code") or ""), str(error.get("type") or ""), str(error.get("message") or "")


def _inner_code(body: object) -> str:
    error = _error_object(body)
    inner = error.get("innererror") if error is not None else None
    return str(inner.get("code") or "") if isinstance(inner, Mapping) else ""


def _json_body(response: Any) -> object:
    try:
        return response.json()
    except Exception:
        try:
            return response.text
        except Exception:
            return None
