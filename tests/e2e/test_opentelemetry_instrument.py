"""Zero code: an unmodified program run under ``opentelemetry-instrument`` is protected and observed.

The program (``APP`` below) knows nothing of the middleware: it builds ``openai.OpenAI()`` from the usual
``OPENAI_*`` variables and makes a few chat calls against the built-in simulator (which enforces a request
limit and fails one request once with a 500). It runs in a subprocess under the real
``opentelemetry-instrument`` with ``opentelemetry-distro``, exporting through the SDK's own OTLP/HTTP exporters
to a receiver in the test (``tests/fixtures/otlp.py``). The test finds the middleware's spans and metrics
there, its limiter waiting instead of collecting 429s (the limit learned from the simulator's headers), and its
retry loop retrying the fault (the SDK's own retries are off on protected calls, so only the middleware can).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from middleware.instrumentation import ENTRY_POINT
from middleware.telemetry import names as n
from middleware.telemetry.recorder import TRACER_NAME
from tests.fixtures.otlp import OtlpReceiver

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"
OPENAI_V2_SCOPE = "opentelemetry.instrumentation.openai_v2"

APP = '''
import json, os, sys
import openai

client = openai.OpenAI()
replies = []
for i in range(int(os.environ.get("APP_CALLS", "5"))):
    headers = {"x-sim-fault": "status=500", "x-sim-fault-once": os.environ["APP_FAULT_KEY"]} if i == 1 else {}
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}], max_tokens=8,
        extra_headers=headers)
    replies.append(reply.choices[0].message.content)
print(json.dumps({"replies": len(replies), "client_class": type(client).__qualname__}), flush=True)
if os.environ.get("APP_WAIT_FOR_STDIN"):
    sys.stdin.readline()
'''


def run_instrumented(tmp_path: Path, sim: Any, receiver: OtlpReceiver, *, disabled: str = "openai",
                     wait: Callable[[subprocess.Popen[str]], None] | None = None,
                     **env_extra: str) -> tuple[dict[str, Any], str]:
    """Run APP under opentelemetry-instrument; returns its JSON line ({} when ``wait`` read it) and its stderr."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_", "OPENAI_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": "sk-zero-code",
        "OTEL_SERVICE_NAME": "zero-code-app",
        "OTEL_TRACES_EXPORTER": "otlp_proto_http", "OTEL_METRICS_EXPORTER": "otlp_proto_http",
        "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # one export, at shutdown
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled,
        "APP_FAULT_KEY": os.urandom(8).hex(),
    })
    env.update(env_extra)
    proc = subprocess.Popen([str(INSTRUMENT), sys.executable, str(app)], env=env, cwd=tmp_path, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait is not None:
        wait(proc)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    lines = out.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), err


def test_an_unmodified_program_is_protected_and_observed(make_simulator: Any, tmp_path: Path,
                                                         otlp_sink: OtlpReceiver) -> None:
    sim = make_simulator(rpm=3, window_s=3.0)
    report, _ = run_instrumented(tmp_path, sim, otlp_sink)
    assert report == {"replies": 5, "client_class": "OpenAI"}
    stats = sim.stats()["total"]
    assert stats["refused_total"] == 0  # the limiter waited: not one 429
    assert stats["faults_total"] == 1 and stats["served"] == 5  # the fault was retried, by the middleware

    ours = [s for s in otlp_sink.spans if s.scope == TRACER_NAME]
    calls = [s for s in ours if s.name == n.SPAN_CALL.format(operation="chat", model="gpt-4o-mini")]
    assert len(calls) == 5 and all(c.kind == "CLIENT" and c.parent_id == "" for c in calls)
    throttles = [attrs for c in calls for name, attrs in c.events if name == n.E_THROTTLE]
    waited = [a for a in throttles if a[n.A_DECISION] == n.DECISION_WAITED]
    assert waited and max(a[n.A_WAIT_SECONDS] for a in waited) > 0.3
    retried = [c for c in calls if any(name == n.E_BACKOFF for name, _ in c.events)]
    assert len(retried) == 1
    attempts = sorted((s for s in ours if s.parent_id == retried[0].span_id), key=lambda s: s.attributes[n.A_ATTEMPT])
    assert [a.attributes.get(n.A_HTTP_STATUS) for a in attempts] == [500, 200]
    assert attempts[1].attributes[n.A_HTTP_RESEND_COUNT] == 1

    decisions = otlp_sink.metric(n.THROTTLE_DECISIONS.instrument, TRACER_NAME)
    assert sum(p.value for p in decisions if p.attributes[n.K_DECISION] == n.DECISION_WAITED) >= 1
    tries = otlp_sink.metric(n.ATTEMPTS.instrument, TRACER_NAME)
    assert sum(p.value for p in tries if p.attributes[n.K_OUTCOME] == n.ATTEMPT_RETRYABLE) == 1
    assert sum(p.value for p in tries if p.attributes[n.K_OUTCOME] == n.ATTEMPT_SUCCESS) == 5
    durations = otlp_sink.metric(n.OPERATION_DURATION.instrument, TRACER_NAME)
    assert sum(p.count for p in durations) == 5  # openai-v2 is off here: the GenAI metrics are ours


def test_settings_come_from_the_environment_and_metrics_are_served_when_asked(
        simulator: Any, tmp_path: Path, otlp_sink: OtlpReceiver) -> None:
    """MIDDLEWARE_RPM sets the limit (the simulator has none); MIDDLEWARE_METRICS_ADDR serves /metrics."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scraped: list[str] = []

    def scrape(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the app's report: its calls are done, it waits on stdin
        scraped.append(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            scraped.append(resp.read().decode())

    run_instrumented(tmp_path, simulator, otlp_sink, wait=scrape, APP_CALLS="4", APP_WAIT_FOR_STDIN="1",
                     MIDDLEWARE_RPM="2", MIDDLEWARE_WINDOW_SECONDS="2", MIDDLEWARE_METRICS_ADDR=f"127.0.0.1:{port}")
    assert json.loads(scraped[0])["replies"] == 4
    exposition = scraped[1]
    waited = [line for line in exposition.splitlines()
              if line.startswith(n.THROTTLE_DECISIONS.prom_name) and f'{n.L_DECISION}="{n.DECISION_WAITED}"' in line]
    assert waited and float(waited[0].rsplit(" ", 1)[1]) >= 1
    assert f'{n.OPERATION_DURATION.name}_count{{' in exposition
    calls = [s for s in otlp_sink.spans if s.scope == TRACER_NAME and s.parent_id == ""]
    assert len(calls) == 4


def test_disabled_instrumentation_leaves_the_program_alone(simulator: Any, tmp_path: Path,
                                                           otlp_sink: OtlpReceiver) -> None:
    report, _ = run_instrumented(tmp_path, simulator, otlp_sink, disabled=f"openai,{ENTRY_POINT}")
    assert report["replies"] == 5
    assert [s for s in otlp_sink.spans if s.scope == TRACER_NAME] == []
    assert not [p for p in otlp_sink.points if p.scope == TRACER_NAME]
    assert simulator.stats()["total"]["faults_total"] == 1  # the SDK retried the 500 itself, unobserved


def test_a_bad_setting_is_one_error_line_and_the_program_runs_unprotected(simulator: Any, tmp_path: Path,
                                                                          otlp_sink: OtlpReceiver) -> None:
    report, err = run_instrumented(tmp_path, simulator, otlp_sink, MIDDLEWARE_RPM="-5")
    assert report["replies"] == 5
    assert "llm_middleware instrumentation left off" in err and "MIDDLEWARE_RPM='-5'" in err
    assert [s for s in otlp_sink.spans if s.scope == TRACER_NAME] == []


def test_next_to_openai_v2_spans_nest_and_each_metric_name_has_one_owner(make_simulator: Any, tmp_path: Path,
                                                                         otlp_sink: OtlpReceiver) -> None:
    """Both instrumentations on: openai-v2's span is the client call, ours an INTERNAL child holding the
    middleware's story (throttle, backoff) with the HTTP attempts below it; the two GenAI metrics openai-v2
    records reach OTLP from openai-v2 alone, the middleware's own metrics from the middleware."""
    sim = make_simulator(rpm=3, window_s=3.0)
    report, _ = run_instrumented(tmp_path, sim, otlp_sink, disabled="")
    assert report["replies"] == 5 and sim.stats()["total"]["refused_total"] == 0

    theirs = [s for s in otlp_sink.spans if s.scope == OPENAI_V2_SCOPE]
    ours = [s for s in otlp_sink.spans if s.scope == TRACER_NAME]
    assert len(theirs) == 5 and all(s.kind == "CLIENT" and s.parent_id == "" for s in theirs)
    by_id = {s.span_id: s for s in theirs}
    calls = [s for s in ours if s.parent_id in by_id]
    assert len(calls) == 5 and all(c.kind == "INTERNAL" for c in calls)
    assert all(c.trace_id == by_id[c.parent_id].trace_id for c in calls)
    attempts = [s for s in ours if s.parent_id in {c.span_id for c in calls}]
    assert len(attempts) == 6 and all(a.kind == "CLIENT" for a in attempts)  # 5 calls, one retried
    assert any(name == n.E_BACKOFF for c in calls for name, _ in c.events)

    for shared in (n.OPERATION_DURATION, n.TOKEN_USAGE):
        assert otlp_sink.scopes_of(shared.instrument) == {OPENAI_V2_SCOPE}, shared.instrument
    assert sum(p.count for p in otlp_sink.metric(n.OPERATION_DURATION.instrument)) == 5
    assert otlp_sink.scopes_of(n.THROTTLE_DECISIONS.instrument) == {TRACER_NAME}
