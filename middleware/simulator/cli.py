"""``middleware simulate``: run the simulator in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from ..errors import ConfigError
from .config import SimulatorConfig
from .server import bound_port, shutdown, start_server, url_host

READY_PREFIX = "SIMULATOR_READY "


async def _serve(config: SimulatorConfig) -> None:
    server, _ = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}http://{url_host(config.host)}:{bound_port(server)}", flush=True)
    await stop.wait()
    await shutdown(server)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``middleware simulate``; returns the exit status (2: bad options, 1: cannot listen).

    Every error is one line on stderr, never a traceback.
    """
    try:
        config = SimulatorConfig.from_args(list(argv) if argv is not None else None)
    except ConfigError as exc:
        print(f"middleware simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"middleware simulate: cannot listen on {config.host}:{config.port}: {reason}", file=sys.stderr)
        return 1
    return 0
