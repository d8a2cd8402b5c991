"""Helpers of the adversarial suite: CLI probes run as real subprocesses, several at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PARALLEL = 4


@dataclass(frozen=True)
class Probe:
    """One command line to run: ``middleware ARGV`` with extra environment variables."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = 30.0
    module: str = "middleware"


@dataclass(frozen=True)
class Outcome:
    """What a probe did: exit status (None when it had to be killed), stdout, stderr, seconds."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        """Non-blank stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def probe(*argv: str, env: Mapping[str, str] | None = None, timeout: float = 30.0,
          module: str = "middleware") -> Probe:
    """A probe of ``python -m MODULE ARGV``."""
    return Probe(tuple(argv), tuple(sorted((env or {}).items())), timeout, module)


def run_probes(probes: Sequence[Probe]) -> dict[Probe, Outcome]:
    """Run every probe as a subprocess, ``PARALLEL`` at a time; a probe past its timeout is killed."""
    base = dict(os.environ, COLUMNS="250", NO_COLOR="1")
    base.pop("OPENAI_API_KEY", None)
    results: dict[Probe, Outcome] = {}
    pending = list(probes)
    running: list[tuple[Probe, subprocess.Popen[str], float]] = []
    while pending or running:
        while pending and len(running) < PARALLEL:
            p = pending.pop(0)
            proc = subprocess.Popen([sys.executable, "-m", p.module, *p.argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                    env={**base, **dict(p.env)}, errors="replace", start_new_session=True)
            running.append((p, proc, time.monotonic()))
        p, proc, started = running.pop(0)
        try:
            out, err = proc.communicate(timeout=max(0.1, p.timeout - (time.monotonic() - started)))
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:  # kill its whole session (a simulator it started, too)
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            code = None
        results[p] = Outcome(code, out, err, time.monotonic() - started)
    return results


def fork_probes(probes: Sequence[Probe]) -> dict[Probe, Outcome]:
    """Run every probe in a forked child of one harness process (see ``cli_harness``): the import is paid once."""
    base = dict(os.environ, COLUMNS="250", NO_COLOR="1")
    base.pop("OPENAI_API_KEY", None)
    payload = [{"module": p.module, "argv": list(p.argv), "env": dict(p.env), "timeout": p.timeout} for p in probes]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [base.get("PYTHONPATH"), root]))
    done = subprocess.run([sys.executable, "-m", "tests.adversarial.cli_harness"], input=json.dumps(payload),
                          capture_output=True, text=True, env=base, timeout=max(p.timeout for p in probes) * 3 + 60,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout)
    return {p: Outcome(o["returncode"], o["stdout"], o["stderr"], o["seconds"]) for p, o in zip(probes, outcomes)}


def assert_one_clear_line(outcome: Outcome, *needles: str) -> None:
    """Non-zero exit, no traceback, exactly one stderr line that contains every needle."""
    assert outcome.returncode is not None, f"still running after {outcome.seconds:.0f}s: {outcome.stderr[-500:]}"
    assert outcome.returncode != 0, outcome.stdout[-500:] + outcome.stderr[-500:]
    assert "Traceback" not in outcome.stderr, outcome.stderr[-1500:]
    assert len(outcome.stderr_lines) == 1, outcome.stderr_lines
    for needle in needles:
        assert needle in outcome.stderr, (needle, outcome.stderr)
