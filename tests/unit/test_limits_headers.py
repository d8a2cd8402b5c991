"""The x-ratelimit header parser and Go-style durations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from middleware.limits import format_go_duration, parse_go_duration, parse_ratelimit_headers
from middleware.sdk import compat
from tests.http import http


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1m30.5s", 90.5), ("1h2m3.5s", 3723.5), ("0s", 0.0),
        ("0", 0.0), ("2.5", 2.5), ("  7 ", 7.0), ("1.5us", 1.5e-6), ("3µs", 3e-6), ("100ns", 1e-7), (".5s", 0.5),
    ],
)
def test_parses_go_durations_and_plain_seconds(text: str, seconds: float) -> None:
    value = parse_go_duration(text)
    assert value is not None and math.isclose(value, seconds, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize("text", ["", "s", "1x", "-1s", "1e3", "nan", "inf", "1s garbage", "1..2s", "m1", "1" * 80])
def test_rejects_garbage(text: str) -> None:
    assert parse_go_duration(text) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (1, "1s"), (360, "6m0s"), (3723.5, "1h2m3.5s"), (1.5e-6, "1.5µs"), (3600, "1h0m0s")],
)
def test_formats_like_go(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**15))
def test_format_round_trips(ns: int) -> None:
    parsed = parse_go_duration(format_go_duration(ns / 1e9))
    assert parsed is not None and math.isclose(parsed, ns / 1e9, rel_tol=1e-9, abs_tol=1e-12)


@given(st.text())
def test_duration_parser_never_raises(text: str) -> None:
    value = parse_go_duration(text)
    assert value is None or (math.isfinite(value) and value >= 0)


@given(st.dictionaries(st.sampled_from([
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "X-RateLimit-Reset-Tokens", "other",
]) | st.text(max_size=30), st.text(max_size=30)))
def test_header_parser_never_raises(headers: dict[str, str]) -> None:
    parsed = parse_ratelimit_headers(headers)
    for value in (parsed.limit_requests, parsed.remaining_tokens, parsed.reset_tokens):
        assert value is None or (math.isfinite(value) and value >= 0)


def test_parses_full_header_set_case_insensitively() -> None:
    parsed = parse_ratelimit_headers({
        "X-RateLimit-Limit-Requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6m0s",
    })
    assert (parsed.limit_requests, parsed.remaining_requests, parsed.reset_requests) == (60, 59, 1)
    assert (parsed.limit_tokens, parsed.remaining_tokens, parsed.reset_tokens) == (150000, 149984, 360)
    assert parsed.errors == ()


def test_missing_and_garbage_values_are_none_with_reasons() -> None:
    parsed = parse_ratelimit_headers({"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "3"})
    assert parsed.limit_requests is None and parsed.remaining_requests == 3
    assert "invalid_limit_requests" in parsed.errors
    assert "missing_limit_tokens" in parsed.errors
    assert parse_ratelimit_headers({"content-type": "application/json"}).errors == ("absent",)


_NAMES = st.sampled_from(["X-RateLimit-Limit-Requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                          "X-RATELIMIT-X", "x-ratelimit", "content-type", "x-request-id", "X-Ratelimit-Limit-Tokens"])
_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"), max_size=12)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
def test_sdk_headers_are_read_as_the_http_library_reads_them(items: list[tuple[str, str]]) -> None:
    """The limiter's one-pass read of the SDK's headers (it decodes only the x-ratelimit-* ones) finds what the
    HTTP library's own public ``multi_items()`` gives for them: case, repeats, non-ASCII values alike."""
    headers = http.Headers([(k, v.encode("utf-8")) for k, v in items])
    expected = {k: v for k, v in headers.multi_items() if k.startswith("x-ratelimit-")}
    found = compat.header_items_with_prefix(headers, "x-ratelimit-")
    assert found is not None and dict(found) == expected
    assert parse_ratelimit_headers(headers) == parse_ratelimit_headers(dict(headers.multi_items()))


def test_plain_mappings_are_not_read_as_sdk_headers() -> None:
    assert compat.header_items_with_prefix({"x-ratelimit-limit-requests": "1"}, "x-ratelimit-") is None
