"""Measure whether an event loop stays free: a task ticking every few milliseconds while the work runs."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
TICK = 0.005


async def with_ticker(work: Awaitable[T], tick: float = TICK) -> tuple[T, float]:
    """``work``'s result and the longest gap between two ticks of a task sleeping ``tick`` seconds meanwhile.

    A loop held by a blocking call (a Redis round trip that waits for its socket timeout) shows as a gap about
    that long; a free loop keeps the gap near ``tick``."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(tick)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        result = await work
    finally:
        ticks.append(time.monotonic())
        task.cancel()
    return result, max((b - a for a, b in itertools.pairwise(ticks)), default=0.0)
