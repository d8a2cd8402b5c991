"""The records reach OpenTelemetry logs through the standard logging bridge, in the call's trace and span.

A real ``LoggerProvider`` with an in-memory exporter, the SDK's ``LoggingHandler`` attached to the
``middleware`` logger (what an application, or ``opentelemetry-instrument`` with logging auto-instrumentation,
does): the bridge reads the trace and span ids from the OTel context current when a record is handled, so the
records must be emitted with the call span current, whichever thread or stream callback emits them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from prometheus_client import CollectorRegistry

from middleware import Config, StreamConfig, protect
from middleware.pipeline import Pipeline
from middleware.retry import RetryConfig
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder
from tests.fixtures.telemetry import TelemetryKit

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Explain log bridges."}]


@pytest.fixture
def otel_logs() -> Iterator[InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():  # the SDK's handler is deprecated for the instrumentation package's twin
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger = logging.getLogger("middleware")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield exporter
    logger.removeHandler(handler)
    logger.setLevel(level)
    provider.shutdown()


def _exported(exporter: InMemoryLogRecordExporter) -> list[Any]:
    return [r.log_record for r in exporter.get_finished_logs()]


def test_records_reach_the_otel_exporter_with_the_call_trace_and_span(
    simulator: Simulator, telemetry: TelemetryKit, otel_logs: InMemoryLogRecordExporter, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=telemetry.provider, slow_throttle_seconds=0.0)
    config = Config(retry=RetryConfig(base_delay=0.01, max_delay=0.02),
                    streaming=StreamConfig(checkpoint_dir=tmp_path, checkpoint_every_chunks=10))
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key="sk-bridge", max_retries=0),
                     pipeline=Pipeline(config, recorder))
    headers = {"x-sim-output-tokens": "60", "x-sim-fault": "status=502", "x-sim-fault-once": f"b-{tmp_path.name}",
               "x-sim-fault-then": "cut_after=25"}
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=headers)
    for _ in stream:  # retried once, cut and resumed (each continuation is cut too, until the text ends)
        pass

    [call] = [s for s in telemetry.spans() if s.name == f"chat {MODEL}"]
    sc = call.get_span_context()
    assert sc is not None
    records = _exported(otel_logs)
    mine = [r for r in records if r.trace_id == sc.trace_id and r.span_id == sc.span_id]
    by_event: dict[str, list[Any]] = {}
    for record in mine:
        by_event.setdefault(str((record.attributes or {})[n.LOG_EVENT]), []).append(record)
    assert {n.LOG_RETRY, n.LOG_THROTTLE_WAIT, n.LOG_INTERRUPTION, n.LOG_RESUMPTION, n.LOG_CHECKPOINT,
            n.LOG_CALL_END} <= set(by_event), sorted(by_event)
    structured = [r for r in records if n.LOG_EVENT in (r.attributes or {})]
    assert len(mine) == len(structured)  # every decision record of this test is about this one call
    # The OTLP record: severity, body, trace flags and the structured fields as attributes (none dropped).
    [retry] = by_event[n.LOG_RETRY]
    assert retry.severity_text == "INFO" and "server_error" in str(retry.body)
    assert retry.attributes[n.A_REASON] == "server_error" and retry.attributes[n.A_DELAY_SECONDS] > 0
    assert retry.attributes[n.LOG_TRACE_ID] == format(sc.trace_id, "032x")
    assert int(retry.trace_flags) == int(sc.trace_flags)
    interrupted = by_event[n.LOG_INTERRUPTION][0]
    assert interrupted.severity_text == "WARN" and interrupted.attributes[n.A_CAUSE] == "connection"
    [end] = by_event[n.LOG_CALL_END]
    assert end.severity_text == "DEBUG"
    assert end.attributes[n.A_USAGE_OUTPUT] == call.attributes[n.A_USAGE_OUTPUT]  # type: ignore[index]
    assert end.attributes[n.A_STREAM_END] == n.STREAM_END_COMPLETED
    assert {n.A_USAGE_INPUT, n.A_ATTEMPTS, n.A_CHUNKS, n.A_REQUEST_STREAM, n.A_OPERATION, n.A_REQUEST_MODEL,
            n.LOG_OUTCOME, n.LOG_DURATION_SECONDS, n.LOG_SPAN_ID} <= set(end.attributes or {})
    assert all(r.dropped_attributes == 0 for r in otel_logs.get_finished_logs())
    # No field needed converting by the OTel SDK (a value of another type is replaced, with a warning).
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], caplog.text


def test_records_about_no_call_carry_the_current_span(
    simulator: Simulator, telemetry: TelemetryKit, otel_logs: InMemoryLogRecordExporter
) -> None:
    """A breaker transition happens inside some call's attempt loop; the bridge puts it in the trace current then."""
    retry = RetryConfig(max_attempts=1, breaker_min_calls=2, breaker_open_seconds=30.0, breaker_max_wait_seconds=0.0,
                        budget_enabled=False)
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=telemetry.provider)
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key="k", max_retries=0),
                     pipeline=Pipeline(Config(retry=retry), recorder))
    with telemetry.provider.get_tracer("app").start_as_current_span("batch") as app:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                               extra_headers={"x-sim-fault": "status=500"})
    sc = app.get_span_context()
    [opened] = [r for r in _exported(otel_logs) if (r.attributes or {}).get(n.LOG_EVENT) == n.LOG_BREAKER]
    assert (opened.trace_id, opened.span_id) == (sc.trace_id, sc.span_id)
    assert opened.severity_text == "WARN" and opened.attributes[n.A_BREAKER_STATE] == "open"
