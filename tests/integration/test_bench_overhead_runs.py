"""``benchmarks/bench_overhead.py`` (issue 13's evidence) runs end to end on this checkout, in a few seconds' worth
of calls: every section prints, its figures are numbers, and the spans of all clients reach the exporter. The
figures themselves are not judged here (performance lives in the benchmark's own run, not in timed tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SECTIONS = (
    "Per call (", "target: added <= openai-v2's", "Per stream of 20 chunks", "per chunk, protected (middleware):",
    "the 1.05x target allows", "OTel record() of the protected streams'", "Where the time of one protected call goes",
    "learn the x-ratelimit-* headers", "Inside a protected stream of 20 chunks",
    "The OpenTelemetry SDK's own cost of each piece", "Memory per call", "20 concurrent async calls:",
)
CLIENTS = ("raw SDK", "openai-v2 instrumentation", "protected (middleware)", "protected, no-op OTel providers")


def test_the_overhead_benchmark_prints_every_section() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_overhead", "--rounds", "1", "--calls", "20", "--streams", "2",
         "--chunks", "20", "--concurrent", "20", "--ratelimit-headers"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "the simulator sends x-ratelimit-* headers" in out
    for section in SECTIONS:
        assert section in out, section
    per_call = out.split("Per call (", 1)[1].split("target:", 1)[0]
    for client in CLIENTS:
        row = next(line for line in per_call.splitlines() if line.startswith(client))
        assert re.search(r"\d+\.\d{3}ms\s+\d+\.\d{3}ms\s+-?\d+us", row), row
    spans = re.search(r"spans exported: (\d+)", out)
    assert spans is not None and int(spans.group(1)) > 0
