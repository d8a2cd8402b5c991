"""Each event reaches both sides: the Prometheus registry and the OTel metrics pipeline."""

from __future__ import annotations

from typing import Any

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from middleware import Config, protect
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from middleware.telemetry.instruments import OtelGate
from middleware.telemetry.recorder import Recorder

MODEL = "gpt-4o-mini"


def _otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_call_and_stream_reach_otel_metrics_with_semconv_names(simulator: Any) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    recorder = Recorder(registry=registry, tracer_provider=TracerProvider(), meter_provider=meter_provider)
    client = protect(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url),
                     pipeline=Pipeline(Config(), recorder))
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=20, stream=True))
    points = _otel_points(reader)
    duration = points[n.OPERATION_DURATION.instrument_name]
    assert sum(p.count for p in duration) == 2
    assert list(duration[0].explicit_bounds) == list(n.DURATION_BUCKETS)  # the advised boundaries
    assert duration[0].attributes[n.A_OPERATION] == "chat"
    assert duration[0].attributes[n.A_REQUEST_MODEL] == MODEL
    usage = points[n.TOKEN_USAGE.instrument_name]
    assert {p.attributes[n.K_TOKEN_TYPE] for p in usage} == {"input", "output"}
    assert sum(p.count for p in points[n.TIME_TO_FIRST_CHUNK.instrument_name]) == 1
    assert sum(p.count for p in points[n.TIME_PER_OUTPUT_CHUNK.instrument_name]) > 0
    # the same events on the Prometheus side
    prom = registry.get_sample_value(n.count(n.OPERATION_DURATION), {
        n.L_MODEL: MODEL, n.L_OPERATION: "chat", n.L_ERROR_TYPE: "", n.L_PROVIDER: n.PROVIDER_NAME})
    assert prom == 2
    meter_provider.shutdown()


def test_otel_gate_follows_the_global_provider() -> None:
    assert OtelGate(explicit=True).active
    # no application provider installed in this test process: the proxy provider means "skip"
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    expected = type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
    gate = OtelGate(explicit=False)
    assert gate.active is expected
    gate.refresh()  # rechecks at most once a second
    assert gate.active is expected
