"""``setup_telemetry()`` with OTLP ships the ``middleware`` logger's records as OTLP logs, in the call's trace.

A fresh interpreter (OpenTelemetry's global providers are set once per process) calls ``setup_telemetry()``
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a real OTLP/HTTP receiver, then makes a protected call that
the simulator fails once (a retry record, INFO) and a stream it stalls once (a stall record, WARNING). The
receiver decodes what the SDK's OTLP exporters sent: the records arrive as log records whose trace ids are those of the
middleware's spans, with the records' fields as attributes and no prompt text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from middleware.simulator import Simulator
from middleware.telemetry import names as n
from middleware.telemetry.recorder import TRACER_NAME
from tests.fixtures.otlp import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a sentence that must not leave the process"

PROGRAM = """
import json, logging, sys, uuid
import openai
import middleware
from middleware import Config, RetryConfig, StreamConfig, protect

handle = middleware.setup_telemetry(metrics_port=None, log_level=sys.argv[2])
client = protect(openai.OpenAI(base_url=sys.argv[1], api_key="sk-logs"),
                 Config(retry=RetryConfig(base_delay=0.01, jitter="none"),
                        streaming=StreamConfig(idle_timeout_seconds=0.3)))
messages = [{"role": "user", "content": sys.argv[3]}]
client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=20,
                               extra_headers={"x-sim-fault": "status=503", "x-sim-fault-key": uuid.uuid4().hex})
stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=20, stream=True,
                                        extra_headers={"x-sim-fault": "stall_after=2;stall_s=1",
                                                       "x-sim-fault-key": uuid.uuid4().hex})
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
handle.shutdown()
print(json.dumps({"logs_installed": handle.log_handler is None}))
"""


def run(sim: Simulator, sink: OtlpReceiver, level: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_"))}
    full.update({"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
                 "OTEL_BLRP_SCHEDULE_DELAY": "100", "PYTHONPATH": str(ROOT)}, **env)
    out = subprocess.run([sys.executable, "-c", PROGRAM, sim.base_url, level, PROMPT], capture_output=True, text=True,
                         timeout=120, env=full, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_records_are_exported_as_otlp_logs_in_the_call_trace(simulator: Simulator, otlp_sink: OtlpReceiver) -> None:
    run(simulator, otlp_sink, "INFO")
    ours = [r for r in otlp_sink.logs if r.attributes.get(n.LOG_EVENT)]
    events = {r.attributes[n.LOG_EVENT]: r for r in ours}
    assert {"retry", "stall"} <= set(events), [r.attributes for r in otlp_sink.logs]
    span_traces = {s.trace_id for s in otlp_sink.spans if s.scope == TRACER_NAME}
    for event in ("retry", "stall"):
        record = events[event]
        assert record.trace_id in span_traces and record.span_id != "0" * 16, record
        assert record.resource.get("service.name")
    assert events["retry"].severity == "INFO" and events["stall"].severity == "WARN"  # OTel's text
    assert "call_end" not in events  # DEBUG: below the level asked for
    assert all(PROMPT not in json.dumps(r.attributes, default=str) + str(r.body) for r in otlp_sink.logs)


def test_no_logs_when_otel_logs_exporter_is_none(simulator: Simulator, otlp_sink: OtlpReceiver) -> None:
    run(simulator, otlp_sink, "INFO", OTEL_LOGS_EXPORTER="none")
    assert otlp_sink.logs == [] and otlp_sink.spans  # traces still go


UNREACHABLE = """
import json, socket, sys, time, uuid
import openai
import middleware
from middleware import Config, RetryConfig, protect

handle = middleware.setup_telemetry(metrics_port=None, log_level="INFO")
client = protect(openai.OpenAI(base_url=sys.argv[1], api_key="sk-logs"),
                 Config(retry=RetryConfig(base_delay=0.01, jitter="none")))
started = time.monotonic()
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=5, extra_headers={"x-sim-fault": "status=503",
                                                                    "x-sim-fault-key": uuid.uuid4().hex})
took = time.monotonic() - started
handle.shutdown()
print(json.dumps({"content": reply.choices[0].message.content, "took": took, "failures": handle.failures.counts}))
"""


def test_an_unreachable_otlp_endpoint_never_breaks_a_call(simulator: Simulator) -> None:
    """Logs, spans and metrics all go to a closed port: the call succeeds at its usual pace, failures are
    counted per exporter (the OTLP exporters retry in their own threads, bounded by OTEL_EXPORTER_OTLP_TIMEOUT)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_"))}
    full.update({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
                 "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-c", UNREACHABLE, simulator.base_url], capture_output=True, text=True,
                         timeout=120, env=full, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["content"] and report["took"] < 5  # no exporter sits on the call path
    assert report["failures"].get("otlp_logs", 0) >= 1 and report["failures"].get("otlp_traces", 0) >= 1
