"""Parse server-directed delays: ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date)."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping

_INFINITY_WORDS = frozenset({"inf", "+inf", "infinity", "+infinity", "nan", "+nan", "-nan"})


def parse_retry_after(headers: Mapping[str, str] | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asks us to wait, or None when absent or unparseable; never negative, never raises.

    A number too large for a float is an excessive wait (``inf``), not garbage: the caller refuses it.
    A date in the past means "now" (0.0).
    """
    if not headers:
        return None
    try:
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    except Exception:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        seconds = _number(value) if value is not None else None
        if seconds is not None:
            return seconds / divisor
    return _http_date(lowered.get("retry-after"), now)


def _number(value: str) -> float | None:
    text = value.strip()
    if text.lower() in _INFINITY_WORDS:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if math.isnan(number) or number < 0:
        return None
    return number  # may be inf on overflow ("1e999"): an excessive delay


def _http_date(value: str | None, now: Callable[[], float]) -> float | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        delay = float(email.utils.mktime_tz(parsed)) - now()
    except (TypeError, ValueError, OverflowError, OSError, IndexError):
        return None
    return max(0.0, delay) if math.isfinite(delay) else None
