"""A slow stream is live on /metrics and in an OTel reader: its chunks show within one second of arriving."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, start_http_server

from middleware import Config, protect
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder

MODEL = "gpt-4o-mini"


def _scraped(port: int, name: str) -> float:
    """Sum of a metric's samples in a real scrape of /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _otel(reader: InMemoryMetricReader, instrument: str, histogram: bool = False) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == instrument:
                    for point in metric.data.data_points:
                        total += point.count if histogram else point.value
    return total


def test_a_slow_streams_chunks_are_visible_within_a_second(make_simulator: Any) -> None:
    sim = make_simulator(tokens_per_s=20.0)  # 20 chunks a second: a 60-chunk stream lasts 3 s
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    recorder = Recorder(registry=registry, meter_provider=MeterProvider(metric_readers=[reader]))
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = int(server.server_address[1])
    try:
        client = protect(openai.OpenAI(base_url=sim.base_url, api_key="k"), pipeline=Pipeline(Config(), recorder))
        received: list[float] = []
        checks: list[tuple[int, float, float, float]] = []
        next_check = time.monotonic() + 0.8
        with client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Slowly."}],
                                            max_tokens=80, stream=True,
                                            extra_headers={"x-sim-output-tokens": "60"}) as stream:
            for _ in stream:
                now = time.monotonic()
                received.append(now)
                if now >= next_check:
                    next_check = now + 0.8
                    # everything that arrived more than one second ago must be visible now, both ways
                    due = sum(1 for t in received if t <= now - 1.0)
                    checks.append((due, _scraped(port, n.STREAM_CHUNKS.prom_name),
                                   _otel(reader, n.STREAM_CHUNKS.instrument_name),
                                   _otel(reader, n.TIME_PER_OUTPUT_CHUNK.instrument_name, histogram=True)))
        assert len(received) >= 55 and received[-1] - received[0] > 2.0  # it was slow
        assert len(checks) >= 2
        for due, scraped, otel_chunks, otel_gaps in checks:
            assert scraped >= due, checks
            assert otel_chunks >= due, checks
            assert otel_gaps >= due - 1, checks  # gaps start after the first chunk
        assert any(scraped < len(received) for _, scraped, _, _ in checks)  # mid-stream, not at the end
    finally:
        server.shutdown()
        server.server_close()
