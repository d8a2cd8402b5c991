"""``SimulatorProcess``: the simulator in a child process, so clients do not share its GIL."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import select
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import IO, Any

from .cli import READY_PREFIX
from .config import SimulatorConfig
from .control import SimulatorControl

_PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


class SimulatorProcess(SimulatorControl):
    """A simulator child process; ready once it has printed its bound address (no sleeping)."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or SimulatorConfig(), **overrides)
        self.root_url = ""
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> SimulatorProcess:
        """Spawn the child and wait for its ready line."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "middleware.simulator", "--config-json", self.config.to_json()],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        line = _read_line(self._proc.stdout, timeout)
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"simulator process did not become ready (got {line!r})")
        self.root_url = line[len(READY_PREFIX) :].strip()
        self.port = int(self.root_url.rsplit(":", 1)[1])
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()
        return self

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid if self._proc is not None else 0

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> SimulatorProcess:
        return self if self._proc is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_line(stream: IO[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:
            return stream.readline()


def start_subprocess(config: SimulatorConfig | None = None, **overrides: Any) -> SimulatorProcess:
    """Start a :class:`SimulatorProcess` and return it once it accepts connections."""
    return SimulatorProcess(config, **overrides).start()
