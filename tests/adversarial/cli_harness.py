"""Runs many CLI probes fast: imports the commands once, then runs each probe in a forked child process.

``python -m tests.adversarial.cli_harness`` reads a JSON list of probes on stdin (``module``, ``argv``, ``env``,
``timeout``) and prints a JSON list of outcomes (``returncode``, ``stdout``, ``stderr``, ``seconds``). Each child
is a real process with its own file descriptors 1 and 2, its own environment and exit status; an exception that
escapes the command is printed and exits 1, exactly as the interpreter does at top level. Only the import of
the package is shared (that is what made one subprocess per probe take seconds on a loaded machine).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

ENTRY_POINTS = {"middleware": ("middleware.cli", "main"), "dashboards.webhook": ("dashboards.webhook", "main")}
PARALLEL = 3


def _child(module: str, argv: list[str], env: dict[str, str], out_fd: int, err_fd: int) -> None:
    os.setpgid(0, 0)  # its own process group: a timeout kills whatever it started too
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.environ.update(env)
    sys.argv = [module, *argv]
    code: Any = 0
    try:
        mod_name, attr = ENTRY_POINTS[module]
        code = getattr(importlib.import_module(mod_name), attr)(argv)
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fork one child per probe, ``PARALLEL`` at a time; kill a child past its timeout."""
    results: list[dict[str, Any] | None] = [None] * len(probes)
    pending = list(enumerate(probes))
    running: dict[int, tuple[int, Any, Any, float, float]] = {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            index, p = pending.pop(0)
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - closed when reaped
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(p["module"], p["argv"], p["env"], out.fileno(), err.fileno())
            running[pid] = (index, out, err, time.monotonic(), float(p["timeout"]))
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for child, (_, _, _, started, timeout) in list(running.items()):
                if now - started > timeout:
                    try:
                        os.killpg(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)
            continue
        index, out, err, started, _ = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        texts = []
        for fh in (out, err):
            fh.seek(0)
            texts.append(fh.read().decode("utf-8", "replace"))
            fh.close()
        results[index] = {"returncode": None if code == -signal.SIGKILL else code, "stdout": texts[0],
                          "stderr": texts[1], "seconds": time.monotonic() - started}
    return [r for r in results if r is not None]


def main() -> None:
    """Import the commands once, run the probes from stdin, print the outcomes."""
    probes = json.load(sys.stdin)
    for mod_name, _ in ENTRY_POINTS.values():
        importlib.import_module(mod_name)
    for name in ("middleware.demo", "middleware.simulator", "middleware.files", "middleware.streaming.resume_cli",
                 "openai", "rich.console", "redis"):
        importlib.import_module(name)
    outcomes = run(probes)
    sys.stdout.write(json.dumps(outcomes))


if __name__ == "__main__":
    main()
