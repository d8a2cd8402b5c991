"""Go-style duration strings, as OpenAI formats its ``x-ratelimit-reset-*`` headers."""

from __future__ import annotations

import math


def format_go_duration(seconds: float) -> str:
    """Format ``seconds`` like Go's ``time.Duration.String()`` at millisecond precision.

    Examples: ``0s``, ``20ms``, ``1s``, ``1.5s``, ``1m30.5s``, ``6m0s``, ``1h2m3s``.
    Negative and NaN inputs format as ``0s``; sub-millisecond values round up to ``1ms``.
    """
    if not seconds > 0:
        return "0s"
    ms = math.ceil(round(seconds * 1000.0, 6))
    if ms < 1000:
        return f"{ms}ms"
    hours, rem = divmod(ms, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    secs, millis = divmod(rem, 1000)
    sec_text = f"{secs}.{millis:03d}".rstrip("0").rstrip(".") if millis else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec_text}s"
    if minutes:
        return f"{minutes}m{sec_text}s"
    return f"{sec_text}s"
