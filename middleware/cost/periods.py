"""Budget periods: the UTC day or month containing an instant, its id and when it ends.

The Redis script computes the same from Redis server time (``budget_script.py``, tested to agree).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
DAY_SECONDS = 86_400.0


def period_id(period: Period, now: float) -> str:
    """``2026-11-30`` (day) or ``2026-11`` (month) for a Unix time."""
    t = datetime.fromtimestamp(now, timezone.utc)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}" if period == "day" else f"{t.year:04d}-{t.month:02d}"


def period_end(period: Period, now: float) -> float:
    """The Unix time at which the period containing ``now`` ends (next UTC midnight or month start)."""
    if period == "day":
        return (now // DAY_SECONDS + 1) * DAY_SECONDS
    t = datetime.fromtimestamp(now, timezone.utc)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc).timestamp()


def period_seconds(period: Period) -> float:
    """The longest the period lasts (for key expiry)."""
    return DAY_SECONDS if period == "day" else 31 * DAY_SECONDS
