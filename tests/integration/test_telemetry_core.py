"""Telemetry core: spans, metrics scraped from a real /metrics, exemplars, stream span endings."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import urllib.request
from typing import Any

import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import start_http_server

from middleware.telemetry import names as n

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello there"}]


def scrape(port: int, openmetrics: bool = True) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if openmetrics:
        req.add_header("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


def test_one_call_span_metrics_and_exemplar(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    server, _ = start_http_server(0, addr="127.0.0.1", registry=telemetry.registry)
    try:
        client = protect_with(openai.OpenAI(api_key="sk-secret-key-123", base_url=simulator.base_url))
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30)
        [span] = telemetry.spans(f"chat {MODEL}")
        assert span.kind == SpanKind.CLIENT
        attrs = span.attributes
        assert attrs[n.A_OPERATION] == "chat"
        assert attrs[n.A_PROVIDER] == "openai"
        assert attrs[n.A_REQUEST_MODEL] == MODEL
        assert attrs[n.A_RESPONSE_MODEL] == reply.model
        assert attrs[n.A_USAGE_INPUT] == reply.usage.prompt_tokens
        assert attrs[n.A_USAGE_OUTPUT] == reply.usage.completion_tokens
        assert n.E_ESTIMATE in [e.name for e in span.events]
        assert n.E_THROTTLE in [e.name for e in span.events]
        [attempt] = telemetry.spans("POST /chat/completions")
        assert attempt.parent.span_id == span.context.span_id
        trace_id = format(span.context.trace_id, "032x")

        body = scrape(server.server_address[1])
        duration = n.OPERATION_DURATION.name
        assert re.search(rf'^{duration}_count{{.*{n.L_MODEL}="{MODEL}".*}} 1.0$', body, re.M)
        usage_lines = [ln for ln in body.splitlines() if ln.startswith(n.TOKEN_USAGE.name + "_bucket")]
        assert usage_lines
        exemplars = re.findall(r'# \{trace_id="([0-9a-f]{32})"\}', body)
        assert trace_id in exemplars
        assert re.search(rf'^{n.REQUESTS.prom_name}{{.*{n.L_OUTCOME}="success".*}} 1.0', body, re.M)
        # no prompt text, no API key anywhere in telemetry
        assert "hello there" not in body and "sk-secret" not in body
        for s in telemetry.spans():
            assert "hello there" not in str(s.to_json())
            assert "sk-secret" not in str(s.to_json())
    finally:
        server.shutdown()


def test_promtool_check_metrics_passes(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url))
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, stream=True))
    out = subprocess.run(["promtool", "check", "metrics"], input=telemetry.text(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_content_captured_only_on_opt_in(simulator: Any, telemetry: Any) -> None:
    from middleware import Config, protect
    from middleware.pipeline import Pipeline
    from middleware.telemetry.recorder import Recorder

    rec = Recorder(registry=telemetry.registry, tracer_provider=telemetry.provider, capture_content=True)
    client = protect(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), pipeline=Pipeline(Config(), rec))
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    [span] = telemetry.spans(f"chat {MODEL}")
    assert "hello there" in span.attributes[n.A_INPUT_MESSAGES]


def _stream_spans(telemetry: Any) -> list[Any]:
    return telemetry.spans(f"chat {MODEL}")


def _client(simulator: Any, protect_with: Any) -> Any:
    return protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0))


def test_stream_completed_ends_span_once(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = _client(simulator, protect_with)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, stream=True))
    [span] = _stream_spans(telemetry)
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_COMPLETED
    assert span.attributes[n.A_CHUNKS] == len(chunks) + 1  # + the hidden usage chunk
    assert span.status.status_code == StatusCode.UNSET
    assert telemetry.sample(n.STREAM_ENDS.prom_name, **{n.L_STREAM_END: n.STREAM_END_COMPLETED}) == 1
    assert telemetry.sample(n.TIME_TO_FIRST_CHUNK.name + "_count") == 1
    assert telemetry.sample(n.STREAM_CHUNKS.prom_name) == len(chunks) + 1


def test_stream_break_ends_span_closed_early(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = _client(simulator, protect_with)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50, stream=True)
    for _ in stream:
        break
    [span] = _stream_spans(telemetry)
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_CLOSED
    stream.close()
    del stream
    gc.collect()
    assert len(_stream_spans(telemetry)) == 1  # exactly once


def test_stream_close_and_context_manager(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = _client(simulator, protect_with)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50, stream=True)
    next(iter(stream))
    stream.close()
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50, stream=True) as s2:
        next(iter(s2))
    spans = _stream_spans(telemetry)
    assert [s.attributes[n.A_STREAM_END] for s in spans] == [n.STREAM_END_CLOSED, n.STREAM_END_CLOSED]
    gc.collect()
    assert len(_stream_spans(telemetry)) == 2


def test_stream_abandoned_ends_on_gc(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = _client(simulator, protect_with)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50, stream=True)
    assert _stream_spans(telemetry) == []
    del stream
    gc.collect()
    [span] = _stream_spans(telemetry)
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_ABANDONED
    assert telemetry.sample(n.STREAMS_ACTIVE.name, **{n.L_OPERATION: "chat"}) == 0


def test_stream_server_cut_ends_with_error(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    from middleware import Config, StreamConfig

    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0),
                          Config(streaming=StreamConfig(resume=False)))
    from middleware import StreamInterrupted

    got = []
    with pytest.raises(StreamInterrupted) as info:
        for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50, stream=True,
                                                    extra_headers={"x-sim-fault": "cut_after=3"}):
            got.append(chunk)
    raw = openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0)
    with pytest.raises(Exception) as unprotected:
        for _ in raw.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50, stream=True,
                                             extra_headers={"x-sim-fault": "cut_after=3"}):
            pass
    # The SDK's own error stays reachable (openai 3.x wraps the cut in APIConnectionError, 1.x/2.x do not).
    assert type(info.value.__cause__) is type(unprotected.value)
    assert info.value.partial.text == "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    [span] = _stream_spans(telemetry)
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_ERROR
    assert span.status.status_code == StatusCode.ERROR
    gc.collect()
    assert len(_stream_spans(telemetry)) == 1


def test_async_stream_endings(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    from middleware import Config, StreamConfig, StreamInterrupted

    async def run() -> None:
        client = protect_with(openai.AsyncOpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0),
                              Config(streaming=StreamConfig(resume=False)))
        kw: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 40, "stream": True}
        # completed
        s = await client.chat.completions.create(**kw)
        _ = [c async for c in s]
        # async with, early exit
        async with await client.chat.completions.create(**kw) as s2:
            async for _c in s2:
                break
        # close() awaited
        s3 = await client.chat.completions.create(**kw)
        await s3.__anext__()
        await s3.close()
        assert s3.response.is_closed
        # server cut
        with pytest.raises((openai.APIError, StreamInterrupted)):
            s4 = await client.chat.completions.create(**kw, extra_headers={"x-sim-fault": "cut_after=2"})
            async for _c in s4:
                pass
        # abandoned
        s5 = await client.chat.completions.create(**kw)
        del s5
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(run())
    gc.collect()
    ends = sorted(s.attributes[n.A_STREAM_END] for s in _stream_spans(telemetry))
    assert ends == sorted([n.STREAM_END_COMPLETED, n.STREAM_END_CLOSED, n.STREAM_END_CLOSED, n.STREAM_END_ERROR,
                           n.STREAM_END_ABANDONED])


def test_chunk_events_bounded_then_summarised(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = _client(simulator, protect_with)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=400, stream=True,
                                                 extra_headers={"x-sim-output-tokens": "300"}))
    assert len(chunks) > 200
    [span] = _stream_spans(telemetry)
    chunk_events = [e for e in span.events if e.name == n.E_CHUNK]
    assert 0 < len(chunk_events) < len(chunks)
    [summary] = [e for e in span.events if e.name == n.E_STREAM_SUMMARY]
    assert summary.attributes[n.A_CHUNKS] == len(chunks) + 1
    assert summary.attributes[n.A_CHUNKS_DROPPED] == len(chunks) + 1 - len(chunk_events)


def test_chunk_events_first_ten_then_every_fiftieth_then_the_last(simulator: Any, protect_with: Any,
                                                                   telemetry: Any) -> None:
    # The documented policy (docs/architecture.md): chunks 1-10, then 50, 100, ..., then the last chunk.
    client = _client(simulator, protect_with)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=400, stream=True,
                                                 extra_headers={"x-sim-output-tokens": "120"}))
    [span] = _stream_spans(telemetry)
    indices = [e.attributes[n.A_CHUNK_INDEX] for e in span.events if e.name == n.E_CHUNK]
    last = len(chunks) + 1  # with the usage chunk the caller did not ask for (counted, hidden)
    assert last > 100
    assert indices == [*range(1, 11), 50, 100, last]


def test_broken_exporter_never_breaks_a_call(simulator: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from prometheus_client import CollectorRegistry

    from middleware import Config, protect
    from middleware.pipeline import Pipeline
    from middleware.telemetry.recorder import Recorder
    from middleware.telemetry.setup import ExportFailures, SafeSpanExporter

    class Exploding(SpanExporter):
        def export(self, spans: Any) -> Any:
            raise ConnectionError("collector unreachable")

    failures = ExportFailures()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SafeSpanExporter(Exploding(), "otlp", failures)))
    rec = Recorder(registry=CollectorRegistry(), tracer_provider=provider)
    client = protect(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), pipeline=Pipeline(Config(), rec))
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    assert reply.choices
    assert failures.counts["otlp"] >= 1
    # and counted in the metric that the LlmTelemetryErrors alert watches
    errors = rec.registry.get_sample_value(n.TELEMETRY_ERRORS.prom_name, {n.L_COMPONENT: "export_otlp"})
    assert errors is not None and errors >= 1


def test_unreachable_otlp_endpoint_does_not_break_calls(simulator: Any, monkeypatch: Any) -> None:
    """A real OTLP exporter pointed at a closed port: calls succeed, failures are counted."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from prometheus_client import CollectorRegistry

    from middleware import Config, protect
    from middleware.pipeline import Pipeline
    from middleware.telemetry.recorder import Recorder
    from middleware.telemetry.setup import ExportFailures, SafeSpanExporter

    failures = ExportFailures()
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    provider.add_span_processor(SimpleSpanProcessor(SafeSpanExporter(exporter, "otlp", failures)))
    rec = Recorder(registry=CollectorRegistry(), tracer_provider=provider)
    client = protect(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), pipeline=Pipeline(Config(), rec))
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5).choices
    assert failures.counts.get("otlp", 0) >= 1


def test_model_label_cardinality_is_bounded() -> None:
    from middleware.telemetry.recorder import ModelLabels

    labels = ModelLabels(cap=3)
    values = {labels.label(f"model-{i}") for i in range(100)}
    assert values == {"model-0", "model-1", "model-2", n.OTHER_MODEL}
