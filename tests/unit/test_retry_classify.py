"""Failure classification over real openai/httpx2 exceptions, and retry-after parsing."""

from __future__ import annotations

import email.utils
import math
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from middleware.errors import PartialResult, StreamInterrupted
from middleware.retry import classify, parse_retry_after
from tests.http import http as httpx2

URL = "https://api.openai.com/v1/chat/completions"
_CLIENT = openai.OpenAI(api_key="sk-test", max_retries=0)


def request() -> httpx2.Request:
    return httpx2.Request("POST", URL)


def status_error(status: int, error: dict[str, Any] | str | None = None,
                 headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """The exception the SDK itself raises for this HTTP response."""
    if isinstance(error, str):
        response = httpx2.Response(status, headers=headers or {}, text=error, request=request())
    else:
        body = {"error": error} if error is not None else None
        response = httpx2.Response(status, headers=headers or {}, json=body, request=request())
    return _CLIENT._make_status_error_from_response(response)


def err(message: str, type_: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": type_, "code": code, "param": None}


RPM = err("Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 3, Used 3",
          "requests", "rate_limit_exceeded")
TPM = err("Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 10000",
          "tokens", "rate_limit_exceeded")
QUOTA = err("You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota", "insufficient_quota")
TOO_LARGE = err("Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, "
                "Requested 45000. The input or output tokens must be reduced in order to run successfully.",
                "tokens", "rate_limit_exceeded")

TABLE: list[tuple[str, openai.APIStatusError, bool, str]] = [
    ("429 requests", status_error(429, RPM), True, "rate_limit"),
    ("429 tokens", status_error(429, TPM), True, "rate_limit"),
    ("429 quota", status_error(429, QUOTA), False, "insufficient_quota"),
    ("429 quota code only", status_error(429, err("quota", None, "insufficient_quota")), False, "insufficient_quota"),
    ("429 billing hard limit", status_error(429, err("limit", "billing_hard_limit_reached")), False, "billing"),
    ("400 billing not active", status_error(400, err("inactive", "invalid_request_error", "billing_not_active")),
     False, "billing"),
    ("429 request too large", status_error(429, TOO_LARGE), False, "request_too_large"),
    ("400 request too large", status_error(400, err("Request too large for model", "invalid_request_error")),
     False, "request_too_large"),
    ("400 context length", status_error(400, err("too long", "invalid_request_error", "context_length_exceeded")),
     False, "request_too_large"),
    ("413", status_error(413, "payload too large"), False, "request_too_large"),
    ("408", status_error(408, err("timeout")), True, "request_timeout"),
    ("409", status_error(409, err("conflict")), True, "conflict"),
    ("500", status_error(500, err("The server had an error", "server_error")), True, "server_error"),
    ("502 html", status_error(502, "<html>Bad gateway</html>"), True, "server_error"),
    ("503", status_error(503, err("overloaded", "server_error")), True, "server_error"),
    ("400", status_error(400, err("bad param", "invalid_request_error")), False, "bad_request"),
    ("401", status_error(401, err("bad key", "invalid_request_error", "invalid_api_key")), False, "auth"),
    ("403", status_error(403, err("region", "invalid_request_error", "unsupported_country_region_territory")),
     False, "permission"),
    ("404", status_error(404, err("no model", "invalid_request_error", "model_not_found")), False, "not_found"),
    ("422", status_error(422, err("unprocessable")), False, "unprocessable"),
    ("418", status_error(418, err("teapot")), False, "other"),
    ("400 content policy", status_error(400, err("rejected", "invalid_request_error", "content_policy_violation")),
     False, "content_policy"),
    ("400 azure content filter", status_error(400, {"message": "filtered", "code": "content_filter",
                                                    "innererror": {"code": "ResponsibleAIPolicyViolation"}}),
     False, "content_policy"),
    ("500 x-should-retry false", status_error(500, err("x"), {"x-should-retry": "false"}),
     False, "should_not_retry_header"),
    ("429 x-should-retry false", status_error(429, RPM, {"x-should-retry": "false"}),
     False, "should_not_retry_header"),
    ("400 x-should-retry true", status_error(400, err("x"), {"x-should-retry": "true"}), True, "should_retry_header"),
    ("429 quota x-should-retry true", status_error(429, QUOTA, {"x-should-retry": "true"}),
     False, "insufficient_quota"),
    ("503 x-should-retry true", status_error(503, err("x"), {"x-should-retry": "true"}), True, "server_error"),
]


@pytest.mark.parametrize(("exc", "retryable", "reason"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_status_error_table(exc: openai.APIStatusError, retryable: bool, reason: str) -> None:
    failure = classify(exc)
    assert (failure.retryable, failure.reason) == (retryable, reason)
    assert failure.status == exc.status_code
    assert failure.error_type == type(exc).__name__


def test_rate_limit_details() -> None:
    failure = classify(status_error(429, TPM, {"retry-after-ms": "1500", "x-request-id": "req_abc"}))
    assert failure.rate_limit_resource == "tokens"
    assert failure.retry_after_seconds == 1.5
    assert failure.request_id == "req_abc"
    assert failure.error_type == "RateLimitError"
    assert classify(status_error(429, RPM)).rate_limit_resource == "requests"
    assert classify(status_error(429, err("slow down"))).rate_limit_resource is None


@pytest.mark.parametrize(("exc", "retryable", "reason"), [
    (openai.APITimeoutError(request()), True, "timeout"),
    (openai.APIConnectionError(request=request()), True, "connection"),
    (httpx2.ConnectTimeout("connect"), True, "timeout"),
    (httpx2.ReadTimeout("read"), True, "timeout"),
    (httpx2.ConnectError("refused"), True, "connection"),
    (ConnectionResetError("reset"), True, "connection"),
    (TimeoutError(), True, "timeout"),
    (httpx2.RemoteProtocolError("peer closed connection without sending complete message body"),
     True, "stream_broken"),
    (openai.APIError("An error occurred during streaming", request(), body={"type": "server_error"}),
     True, "stream_broken"),
    (openai.APIError("An error occurred during streaming", request(), body={"code": "insufficient_quota"}),
     False, "insufficient_quota"),
    (StreamInterrupted("broken", partial=PartialResult(), cause="stall"), False, "stream_broken"),
    (ValueError("bug"), False, "other"),
    (KeyboardInterrupt(), False, "other"),
])
def test_transport_and_generic(exc: BaseException, retryable: bool, reason: str) -> None:
    failure = classify(exc)
    assert (failure.retryable, failure.reason, failure.status) == (retryable, reason, None)


def test_breaker_counts_only_upstream_failures() -> None:
    assert classify(status_error(503)).counts_for_breaker
    assert classify(openai.APITimeoutError(request())).counts_for_breaker
    assert classify(status_error(500, err("x"), {"x-should-retry": "false"})).counts_for_breaker
    assert not classify(status_error(429, RPM)).counts_for_breaker
    assert not classify(status_error(400)).counts_for_breaker
    assert not classify(ValueError()).counts_for_breaker


# ------------------------------------------------------------------ retry-after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "250"}, 0.25),
    ({"Retry-After-Ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": " 1.5 "}, 1.5),
    ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
    ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-3"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "1e999"}, math.inf),
    ({}, None),
    (None, None),
])
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    assert parse_retry_after(headers, now=lambda: NOW) == expected


def test_parse_retry_after_reads_httpx_headers() -> None:
    assert parse_retry_after(httpx2.Headers({"Retry-After": "4"})) == 4.0


@given(st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "Retry-After", "other"]), st.text()))
def test_parse_retry_after_never_raises_nor_negative(headers: dict[str, str]) -> None:
    value = parse_retry_after(headers, now=lambda: NOW)
    assert value is None or value >= 0


@given(st.one_of(st.floats(allow_nan=True), st.integers(min_value=-10**30, max_value=10**30)).map(str))
def test_parse_retry_after_numbers(text: str) -> None:
    value = parse_retry_after({"retry-after": text})
    assert value is None or value >= 0
