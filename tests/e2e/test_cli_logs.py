"""``--log-format json|text`` and ``--log-level``: the commands write the middleware's records to stderr.

Run as subprocesses (``python -m middleware``), as a user would: the demo against its built-in simulator
(faults injected at its usual rates, and the stream it cuts on purpose), for two seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from middleware.telemetry import names as n

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "middleware", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def demo(*log_args: str) -> subprocess.CompletedProcess[str]:
    out = run("demo", "--duration", "2", "--workers", "2", "--no-progress", "--metrics-port", "0", *log_args)
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: an injected fault reached the caller
    assert "Summary after" in out.stdout
    return out


def structured(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if n.LOG_EVENT in line]


@pytest.mark.slow
def test_demo_writes_json_lines_with_trace_ids() -> None:
    out = demo("--log-format", "json", "--log-level", "INFO")
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in out.stderr.splitlines() if x.strip()]), out.stderr[-2000:]
    records = structured(lines)
    # The demo cuts one stream on purpose and resumes it: at least these two records, in one trace.
    events = {r[n.LOG_EVENT] for r in records}
    assert {n.LOG_INTERRUPTION, n.LOG_RESUMPTION} <= events, events
    for record in records:
        assert record["logger"] == "middleware" and record["level"] in ("INFO", "WARNING")
        assert HEX32.match(record[n.LOG_TRACE_ID]) and HEX16.match(record[n.LOG_SPAN_ID]), record
        assert record[n.LOG_EVENT] in n.LOG_EVENTS
    cut = next(r for r in records if r[n.LOG_EVENT] == n.LOG_INTERRUPTION)
    assert any(r[n.LOG_EVENT] == n.LOG_RESUMPTION and r[n.LOG_TRACE_ID] == cut[n.LOG_TRACE_ID] for r in records)
    assert not any(r[n.LOG_EVENT] == n.LOG_CALL_END for r in records)  # DEBUG: below the level asked
    assert "sk-demo" not in out.stderr + out.stdout


@pytest.mark.slow
def test_demo_text_format_at_debug_and_no_logs_without_the_options() -> None:
    out = demo("--log-level", "debug")  # the format defaults to text
    ends = [line for line in out.stderr.splitlines() if f"{n.LOG_EVENT}={n.LOG_CALL_END}" in line]
    assert ends, out.stderr[-2000:]
    assert all(re.search(r" DEBUG middleware: \S+ \S+ .* trace_id=[0-9a-f]{32} span_id=[0-9a-f]{16} ", line)
               for line in ends), ends[:3]
    assert "sk-demo" not in out.stderr
    quiet = demo()
    assert n.LOG_EVENT not in quiet.stderr and "trace_id" not in quiet.stderr


def test_log_options_before_any_command_and_their_errors() -> None:
    ok = run("--log-format", "json", "--log-level", "WARNING", "--version")
    assert ok.returncode == 0 and ok.stdout.strip()
    bad = run("--log-level", "loud", "demo")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--log-level" in bad.stderr
    bad_demo = run("demo", "--log-format", "xml")
    assert bad_demo.returncode == 2 and "--log-format" in bad_demo.stderr and "Traceback" not in bad_demo.stderr
    missing = run("--log-format")
    assert missing.returncode == 2 and "needs a value" in missing.stderr
    assert "--log-format" in run("demo", "--help").stdout
    assert "--log-level" in run("--help").stdout
