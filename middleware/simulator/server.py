"""Running the simulator: the asyncio server, and ``Simulator`` in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .app import SimulatorApp
from .config import SimulatorConfig
from .control import SimulatorControl
from .httpserver import serve_connection


async def start_server(config: SimulatorConfig) -> tuple[asyncio.Server, SimulatorApp]:
    """Bind and start serving ``config`` on the running loop."""
    app = SimulatorApp(config)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(reader, writer, app.handle)
        except asyncio.CancelledError:  # shutdown: end quietly (asyncio logs cancelled connection tasks)
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, config.host, config.port, backlog=1024, reuse_address=True)
    return server, app


async def shutdown(server: asyncio.Server) -> None:
    """Stop accepting, then cancel every task still running on this loop."""
    server.close()
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 1.0)


def url_host(host: str) -> str:
    """The host to put in URLs for a bind address."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def bound_port(server: asyncio.Server) -> int:
    """The port ``server`` listens on."""
    port: int = server.sockets[0].getsockname()[1]
    return port


class Simulator(SimulatorControl):
    """A simulator serving from a background thread with its own event loop (a context manager)."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or SimulatorConfig(), **overrides)
        self.port = 0
        self.root_url = ""
        self.app: SimulatorApp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> Simulator:
        """Start serving; returns once the socket is bound."""
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator did not start")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server, self.app = loop.run_until_complete(start_server(self.config))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.port = bound_port(server)
        self.root_url = f"http://{url_host(self.config.host)}:{self.port}"
        stopped = asyncio.Event()
        self._stop = stopped.set
        self._ready.set()
        try:
            loop.run_until_complete(stopped.wait())
            loop.run_until_complete(shutdown(server))
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
