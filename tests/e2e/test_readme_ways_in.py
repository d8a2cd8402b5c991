"""The README's three ways in, each run exactly as written against the simulator, in a subprocess.

The code blocks are read from README.md's "Three ways in" section, never retyped here. The Python snippets run
through ``runpy`` in a fresh interpreter, which then reports what the snippet left behind (is ``client``
protected, how many calls the middleware recorded); the shell snippet runs in ``bash`` next to the README's
``app.py``, with ``OTEL_*`` variables pointing its exporters at a receiver in the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from middleware.telemetry import names as n
from middleware.telemetry.recorder import TRACER_NAME
from tests.fixtures.otlp import OtlpReceiver

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

HARNESS = f"""
import json, runpy, sys
namespace = runpy.run_path(sys.argv[1], run_name="__main__")
import middleware
from prometheus_client import REGISTRY
client = namespace["client"]
try:
    pipeline = middleware.pipeline_of(client)
except TypeError:
    pipeline = None
calls = sum(s.value for f in REGISTRY.collect() for s in f.samples if s.name == "{n.OPERATION_DURATION.name}_count")
print(json.dumps({{"protected": pipeline is not None, "installed": middleware.installed() is pipeline is not None,
                  "recorded_calls": calls}}))
"""


def ways_in() -> dict[str, list[tuple[str, str]]]:
    """``{heading: [(language, code), ...]}`` of the "Three ways in" section, in README order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Three ways in", 1)[1].split("\n## ", 1)[0]
    found: dict[str, list[tuple[str, str]]] = {}
    for part in section.split("\n### ")[1:]:
        heading = part.splitlines()[0].strip()
        found[heading] = re.findall(r"```(\w+)\n(.*?)```", part, flags=re.S)
    return found


def clean_env(simulator: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_", "OPENAI_"))}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "OPENAI_BASE_URL": simulator.base_url,
                "OPENAI_API_KEY": "sk-readme", "PYTHONPATH": str(ROOT)})
    return env


def test_the_readme_has_the_three_ways_shortest_first() -> None:
    headings = list(ways_in())
    assert [h.split(":", 1)[0] for h in headings[:3]] == ["1. No code", "2. One line at start-up", "3. One client"]
    blocks = ways_in()
    assert [lang for lang, _ in blocks[headings[0]]] == ["python", "bash"]
    assert [lang for lang, _ in blocks[headings[1]]] == ["python"]
    assert [lang for lang, _ in blocks[headings[2]]] == ["python"]
    assert "middleware" not in blocks[headings[0]][0][1]  # the program of the first way is unmodified


def run_python_snippet(code: str, simulator: Any, tmp_path: Path) -> tuple[dict[str, Any], str]:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(code)
    out = subprocess.run([sys.executable, "-c", HARNESS, str(snippet)], capture_output=True, text=True,
                         timeout=120, env=clean_env(simulator), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


@pytest.mark.parametrize("way", [1, 2], ids=["install", "protect"])
def test_python_ways_in_run_as_written(way: int, simulator: Any, tmp_path: Path) -> None:
    heading = list(ways_in())[way]
    (_, code), = ways_in()[heading]
    report, printed = run_python_snippet(code, simulator, tmp_path)
    assert printed.strip()  # the reply's text
    assert report["protected"] is True and report["recorded_calls"] == 1
    assert report["installed"] is (way == 1)
    assert simulator.stats()["total"]["served"] == 1


def test_no_code_way_in_runs_as_written(simulator: Any, tmp_path: Path, otlp_sink: OtlpReceiver) -> None:
    heading = next(iter(ways_in()))
    (_, app), (_, command) = ways_in()[heading]
    (tmp_path / "app.py").write_text(app)
    env = clean_env(simulator)
    env.update({"OTEL_TRACES_EXPORTER": "otlp_proto_http", "OTEL_METRICS_EXPORTER": "otlp_proto_http",
                "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.endpoint,
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai"})
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip()  # the reply's text
    calls = [s for s in otlp_sink.spans if s.scope == TRACER_NAME and s.parent_id == ""]
    assert [c.name for c in calls] == [n.SPAN_CALL.format(operation="chat", model="gpt-4o-mini")]
    assert any(name == n.E_THROTTLE for name, _ in calls[0].events)
    assert sum(p.count for p in otlp_sink.metric(n.OPERATION_DURATION.instrument, TRACER_NAME)) == 1
