"""The ``llm_middleware`` instrumentor in process: registration, settings, and OpenTelemetry's openai-v2 next to it.

The subprocess runs under the real ``opentelemetry-instrument`` are in ``tests/e2e/test_opentelemetry_instrument.py``;
here both instrumentors are turned on in this process with SDK providers of the test (an in-memory span
exporter and metric reader), so that the span tree and every metric point can be read exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import openai
import pytest
import tomllib
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import middleware
from middleware import pipeline_of
from middleware.instrumentation import ENTRY_POINT, OPENAI_REQUIREMENT, MiddlewareInstrumentor
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from middleware.telemetry.recorder import TRACER_NAME, Recorder, openai_v2_active

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini"
OPENAI_V2_SCOPE = "opentelemetry.instrumentation.openai_v2"


def test_dependencies_state_the_supported_openai_range_as_the_package_does() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert OPENAI_REQUIREMENT in project["dependencies"]
    assert list(MiddlewareInstrumentor().instrumentation_dependencies()) == [OPENAI_REQUIREMENT]
    assert project["entry-points"]["opentelemetry_instrumentor"] == {
        ENTRY_POINT: "middleware.instrumentation:MiddlewareInstrumentor"}
    installed = {e.name: e.value for e in entry_points(group="opentelemetry_instrumentor")}
    assert installed[ENTRY_POINT] == "middleware.instrumentation:MiddlewareInstrumentor"


def test_import_middleware_patches_nothing_and_loads_no_instrumentation() -> None:
    probe = ("import json, sys, openai; before = openai.OpenAI.__dict__['__init__']; import middleware; "
             "print(json.dumps({'same': openai.OpenAI.__dict__['__init__'] is before, "
             "'loaded': sorted(m for m in sys.modules if m.startswith('opentelemetry.instrumentation'))}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"same": True, "loaded": []}


@pytest.fixture
def providers() -> Iterator[tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, exporter, meter_provider, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def ours() -> Iterator[MiddlewareInstrumentor]:
    instrumentor = MiddlewareInstrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    middleware.uninstall()


def points(reader: InMemoryMetricReader) -> dict[tuple[str, str], list[Any]]:
    """``{(scope, metric name): data points}``."""
    found: dict[tuple[str, str], list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                found.setdefault((sm.scope.name, m.name), []).extend(m.data.data_points)
    return found


def test_instrument_installs_protection_with_settings_from_the_environment(
        simulator: Any, providers: Any, ours: MiddlewareInstrumentor, monkeypatch: pytest.MonkeyPatch) -> None:
    tracer_provider, exporter, meter_provider, reader = providers
    monkeypatch.setenv("MIDDLEWARE_MAX_ATTEMPTS", "3")
    monkeypatch.delenv("MIDDLEWARE_METRICS_ADDR", raising=False)
    ours.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert ours.pipeline is middleware.installed() and ours.pipeline is not None
    assert ours.pipeline.config.retry.max_attempts == 3 and ours.metrics_port is None  # /metrics only when asked
    client = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
    assert pipeline_of(client) is ours.pipeline
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans if s.parent is None] == [n.SPAN_CALL.format(operation="embeddings",
                                                                              model="text-embedding-3-small")]
    assert points(reader)[(TRACER_NAME, n.OPERATION_DURATION.instrument)][0].count == 1

    ours.uninstrument()
    assert middleware.installed() is None and ours.pipeline is None
    assert type(openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")) is openai.OpenAI


def test_metrics_addr_serves_the_pipelines_registry(simulator: Any, ours: MiddlewareInstrumentor,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDDLEWARE_METRICS_ADDR", "127.0.0.1:0")
    registry = CollectorRegistry()
    pipeline = Pipeline(middleware.Config(), Recorder(registry=registry))
    ours.instrument(pipeline=pipeline)
    assert ours.pipeline is pipeline and ours.metrics_port
    openai.OpenAI(base_url=simulator.base_url, api_key="sk-1").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}])
    url = f"http://127.0.0.1:{ours.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert f'{n.OPERATION_DURATION.name}_count{{' in text
    ours.uninstrument()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_with_openai_v2_the_spans_nest_and_the_shared_genai_metrics_have_one_owner(
        simulator: Any, providers: Any, ours: MiddlewareInstrumentor) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    tracer_provider, exporter, meter_provider, reader = providers
    registry = CollectorRegistry()
    pipeline = Pipeline(middleware.Config(), Recorder(registry=registry, tracer_provider=tracer_provider,
                                                      meter_provider=meter_provider))
    theirs = OpenAIInstrumentor()
    assert not openai_v2_active()
    theirs.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        assert openai_v2_active()
        ours.instrument(pipeline=pipeline)
        client = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-sim-fault": "status=500", "x-sim-fault-once": "v2-a"})
        chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                     stream=True, stream_options={"include_usage": True}))
        assert len(chunks) > 1
        client.responses.create(model=MODEL, input="hi")  # openai-v2 2.4b0 does not wrap the Responses API
    finally:
        theirs.uninstrument()
    assert not openai_v2_active()

    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    v2 = [s for s in spans if s.instrumentation_scope.name == OPENAI_V2_SCOPE]
    assert len(v2) == 2 and all(s.kind is SpanKind.CLIENT and s.parent is None for s in v2)
    calls = [s for s in spans if s.instrumentation_scope.name == TRACER_NAME and s.name.startswith(("chat ",
                                                                                                   "responses "))]
    nested = [c for c in calls if c.parent is not None]
    assert len(nested) == 2 and all(c.kind is SpanKind.INTERNAL for c in nested)
    assert {by_id[c.parent.span_id].instrumentation_scope.name for c in nested if c.parent} == {OPENAI_V2_SCOPE}
    alone = [c for c in calls if c.parent is None]
    assert [c.name for c in alone] == [n.SPAN_CALL.format(operation="responses", model=MODEL)]
    assert alone[0].kind is SpanKind.CLIENT
    attempts = [s for s in spans if s.parent is not None and s.parent.span_id in {c.context.span_id for c in nested}]
    assert len(attempts) == 3 and all(a.kind is SpanKind.CLIENT for a in attempts)  # one call retried once

    got = points(reader)
    for shared in (n.OPERATION_DURATION, n.TOKEN_USAGE):
        assert (TRACER_NAME, shared.instrument) not in got  # while openai-v2 is on, the OTel name is its own
        assert (OPENAI_V2_SCOPE, shared.instrument) in got
    assert sum(p.count for p in got[(OPENAI_V2_SCOPE, n.OPERATION_DURATION.instrument)]) == 2
    assert sum(p.value for p in got[(TRACER_NAME, n.REQUESTS.instrument)]) == 3  # ours: every call
    # /metrics (our registry) keeps the GenAI metrics of every call, the Responses call included.
    count = registry.get_sample_value(f"{n.OPERATION_DURATION.name}_count", {
        n.L_MODEL: MODEL, n.L_OPERATION: "responses", n.L_ERROR_TYPE: "", n.L_PROVIDER: n.PROVIDER_NAME})
    assert count == 1
    name = f"{n.OPERATION_DURATION.name}_count"
    assert sum(s.value for f in registry.collect() for s in f.samples if s.name == name) == 3
