"""Parsing of OpenAI's ``x-ratelimit-*`` response headers (pure functions, never raise)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..sdk import compat

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_COMPONENT = re.compile(rf"({_NUMBER})(ms|us|µs|μs|ns|h|m|s)")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|us|µs|μs|ns|h|m|s))+")
_PLAIN = re.compile(_NUMBER)
_MAX_LEN = 64
_PREFIX = "x-ratelimit-"
_RESOURCES = ("requests", "tokens")
_KINDS = ("limit", "remaining", "reset")


@functools.lru_cache(maxsize=1024)
def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration (``6m0s``, ``20ms``, ``1h2m3.5s``) or plain seconds (``1.5``); ``None`` if invalid.

    Cached: an upstream sends the same few resets over and over (``1s``, ``6m0s``, ``20ms``).
    """
    s = text.strip()
    if not s or len(s) > _MAX_LEN:
        return None
    if _PLAIN.fullmatch(s):
        return float(s)
    if not _DURATION.fullmatch(s):
        return None
    total = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _COMPONENT.findall(s))
    return total if math.isfinite(total) else None


def _fraction(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_go_duration(seconds: float) -> str:
    """Format non-negative seconds the way Go's ``time.Duration.String`` does (nanosecond precision)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _fraction(ns, 1_000) + "µs"
    if ns < 1_000_000_000:
        return _fraction(ns, 1_000_000) + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + _fraction(rest, 1_000_000_000) + "s"


def _parse_count(text: str) -> float | None:
    s = text.strip()
    if not s or len(s) > _MAX_LEN:
        return None
    if s.isdecimal() or _PLAIN.fullmatch(s):  # digits only: what ``\d+`` matches (Unicode category Nd)
        return float(s)
    return None


@dataclass(frozen=True)
class RatelimitHeaders:
    """Parsed ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; ``None`` where missing or invalid.

    ``errors`` holds one closed reason code per problem: ``absent`` (no such header at all),
    ``missing_<kind>_<resource>`` or ``invalid_<kind>_<resource>``.
    """

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None
    errors: tuple[str, ...] = ()

    def limit(self, resource: str) -> float | None:
        """``limit-*`` of ``"requests"`` or ``"tokens"``."""
        value: float | None = getattr(self, f"limit_{resource}")
        return value

    def remaining(self, resource: str) -> float | None:
        """``remaining-*`` of ``"requests"`` or ``"tokens"``."""
        value: float | None = getattr(self, f"remaining_{resource}")
        return value

    def reset(self, resource: str) -> float | None:
        """``reset-*`` of ``"requests"`` or ``"tokens"`` in seconds."""
        value: float | None = getattr(self, f"reset_{resource}")
        return value


ABSENT = RatelimitHeaders(errors=("absent",))
"""The parse of a response without any ``x-ratelimit-*`` header (one shared value: the limiter tests for it)."""

_FIELDS = tuple((f"{kind}_{resource}", f"{_PREFIX}{kind}-{resource}", kind)
                for kind in _KINDS for resource in _RESOURCES)


def _rate_limit_values(headers: Mapping[str, str]) -> dict[str, object]:
    """The ``x-ratelimit-*`` values present, by lower-case name (this runs on every response).

    The SDK's headers are read in one pass that decodes only the matching ones (each ``get`` would scan them
    all); plain mappings may spell names in any case and are lower-cased here.
    """
    items = compat.header_items_with_prefix(headers, _PREFIX)
    if items is not None:
        return dict(items)
    return {low: v for k, v in headers.items() if isinstance(k, str) and (low := k.lower()).startswith(_PREFIX)}


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RatelimitHeaders:
    """Parse the rate-limit headers of one response; tolerant of missing and garbage values."""
    try:
        found = _rate_limit_values(headers)
    except Exception:
        return RatelimitHeaders(errors=("invalid_headers",))
    if not found:
        return ABSENT
    values: dict[str, float | None] = {}
    errors: list[str] = []
    for field, name, kind in _FIELDS:
        raw = found.get(name)
        if raw is None:
            values[field] = None
            errors.append(f"missing_{field}")
            continue
        text = raw if isinstance(raw, str) else str(raw)
        value = parse_go_duration(text) if kind == "reset" else _parse_count(text)
        if value is None:
            errors.append(f"invalid_{field}")
        values[field] = value
    return RatelimitHeaders(**values, errors=tuple(errors))
