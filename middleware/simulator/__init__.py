"""An OpenAI-compatible simulator on raw asyncio streams: deterministic output, OpenAI-like rate
limits and headers, a latency model and fault injection (see :mod:`.faults` for the grammar).

Request headers it understands: ``x-sim-output-tokens`` (output length), ``x-sim-fault``,
``x-sim-fault-once``, ``x-sim-fault-then``, ``x-sim-fault-key`` and ``x-sim-fault-times`` (fault injection, once
or counted), ``x-sim-tool-call`` (force a tool call), ``x-sim-tag``
(record arrival times, ``GET /stats/requests?tag=``).
"""

from .cli import main
from .config import SimulatorConfig
from .durations import format_go_duration
from .faults import Fault, FaultSyntaxError, parse_fault
from .process import SimulatorProcess, start_subprocess
from .server import Simulator

__all__ = [
    "Fault",
    "FaultSyntaxError",
    "Simulator",
    "SimulatorConfig",
    "SimulatorProcess",
    "format_go_duration",
    "main",
    "parse_fault",
    "start_subprocess",
]
