"""The `middleware` command: the demo end to end (short), and the sub-commands answer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "middleware", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_demo_runs_end_to_end_against_the_simulator() -> None:
    out = run("demo", "--duration", "6", "--workers", "3", "--no-progress", "--metrics-port", "0")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "identical to the uninterrupted stream: True" in text
    assert "Summary after" in text
    assert "errors seen by the caller" in text
    assert "sk-demo" not in text + out.stderr  # the API key never appears in output


def test_help_and_subcommands() -> None:
    assert "demo" in run("--help").stdout
    assert run("--version").stdout.strip()
    assert run("dashboards", "check").returncode == 0
    assert "checkpoint_id" in run("resume", "--help").stdout
    assert "--rpm" in run("simulate", "--help").stdout
    bad = run("no-such-command")
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_live_demo_without_key_is_a_clear_error() -> None:
    out = run("demo", "--live", "--metrics-port", "0")
    assert out.returncode == 2
    assert "OPENAI_API_KEY" in out.stdout + out.stderr


@pytest.mark.slow
def test_demo_until_stopped_ends_cleanly_on_sigterm() -> None:
    """`--duration 0` (the compose stack) runs until SIGTERM, then prints its summary and stops the simulator."""
    import signal
    import time

    env = dict(os.environ, COLUMNS="200")
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "middleware", "demo", "--duration", "0", "--workers", "2",
                             "--no-progress", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        lines = []
        while time.monotonic() < deadline:  # wait until the workload is running
            line = proc.stdout.readline()
            lines.append(line)
            if "workers for ever" in line or not line:
                break
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-2000:] + err[-2000:]
    assert "interrupted: stopping the workload" in text and "Summary after" in text
