"""What an endpoint handler gets: the admitted call, shared services, and stream fault hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import SimulatorConfig
from .exchange import Exchange
from .faults import Fault, malformed_position
from .latency import Latency
from .stats import Stats

Settle = Callable[[int, bool], None]
"""Called once when the generation ends: (completion tokens produced, fully served)."""


@dataclass
class Services:
    """Server-wide objects shared by every handler."""

    config: SimulatorConfig
    latency: Latency
    stats: Stats


@dataclass
class Call:
    """One admitted generation request."""

    ex: Exchange
    body: Mapping[str, Any]
    model: str
    prompt_tokens: int
    fault: Fault | None
    settle: Settle

    @property
    def seed(self) -> int | None:
        """The request's ``seed``, if any."""
        seed = self.body.get("seed")
        return int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None

    def header_int(self, name: str) -> int | None:
        """An integer request header, if present and valid."""
        value = self.ex.request.headers.get(name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


class StreamFaults:
    """Applies ``cut_after``, ``stall_after`` and ``malformed_sse`` to a stream of content chunks."""

    def __init__(self, fault: Fault | None, total_chunks: int, latency: Latency) -> None:
        self.fault = fault
        self.malformed_at = malformed_position(fault, total_chunks) if fault else None
        self.latency = latency

    async def after(self, ex: Exchange, sent: int) -> bool:
        """Hook after ``sent`` content chunks; ``False`` once the connection has been cut."""
        fault = self.fault
        if fault is None:
            return True
        if self.malformed_at == sent:
            ex.sse(b"data: {\"id\": \"chatcmpl-garbage\", \"choices\": [{\"delta\": \n\n")
        if fault.stall_after == sent:
            await ex.conn.drain(force=True)
            await asyncio.sleep(self.latency.scaled(fault.stall_s))
        if fault.cut_after == sent:
            await ex.conn.drain(force=True)
            ex.conn.abort()
            return False
        return True
