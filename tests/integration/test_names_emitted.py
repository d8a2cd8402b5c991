"""Every name is used, every status is right.

One broad workload (the metric parity workload, which drives every metric, plus the cases it does not reach:
content capture, a wait for an open circuit, a limiter and a budget refusal, the fallback estimate, a background
Responses stream resumed by GET, and streams continued from checkpoints) runs against the simulator with a real
OTel tracer provider and an in-memory span exporter, and a real handler on the ``middleware`` logger. Every span
name, span event name and attribute key of ``names`` (``SPAN_*``, ``E_*``, ``A_*``) must appear in the finished
spans, and every log event and field (``LOG_*``) in the records. Metrics: ``test_metric_parity.py`` asserts that
the same workload produces every metric of ``names.all_metrics()``.

Then the statuses: an attempt whose stream was cut ends ERROR with ``error.type`` (its span covers the body, not
just the headers), and a resumption that is a GET is named and attributed as one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from middleware import BudgetExceeded, CheckpointNotFound, Config, StreamConfig, ThrottleTimeout, protect
from middleware.cost import CostConfig, parse_rules
from middleware.errors import StreamInterrupted
from middleware.limits import LimitConfig
from middleware.pipeline import Pipeline
from middleware.retry import RetryConfig
from middleware.simulator import Simulator
from middleware.streaming import resume
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder
from middleware.tokens import OutputPredictor
from tests.integration.test_metric_parity import run_workload

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Name every name."}]

# Names checked another way than by equality with an emitted key, and why.
PREFIXES = {"A_TAG_PREFIX": "a prefix: llm_middleware.tag.<key> per attribution tag"}
TEMPLATES = {"SPAN_CALL": "{operation} {model}", "SPAN_ATTEMPT": "{method} {route}"}


def names_of(prefix: str) -> dict[str, str]:
    """``{constant: value}`` of the string constants of ``names`` starting with ``prefix``."""
    return {k: v for k, v in vars(n).items() if k.startswith(prefix) and isinstance(v, str)}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def logs() -> Iterator[Collect]:
    logger = logging.getLogger("middleware")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _client(sim: Simulator, recorder: Recorder, config: Config, **kw: Any) -> Any:
    return protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-names", max_retries=0, **kw),
                   pipeline=Pipeline(config, recorder))


def _drain(stream: Any) -> str | None:
    """Read a stream to its end; the checkpoint id when it broke for good."""
    try:
        for _ in stream:
            pass
    except StreamInterrupted as exc:
        return exc.checkpoint_id
    return None


def run_extras(sim: Simulator, provider: TracerProvider, tmp_path: Path) -> None:
    """What the parity workload does not reach."""
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=provider, slow_throttle_seconds=0.1)
    # Content capture on: the messages on the call span (and the error message in the exception event).
    captured = _client(sim, Recorder(registry=CollectorRegistry(), tracer_provider=provider, capture_content=True),
                       Config())
    captured.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    _drain(captured.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, stream=True))
    # A wait for an open circuit (then its probe closes it).
    breaker = _client(sim, recorder, Config(retry=RetryConfig(
        max_attempts=1, breaker_min_calls=2, breaker_open_seconds=0.3, breaker_max_wait_seconds=3.0,
        budget_enabled=False)))
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            breaker.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                            extra_headers={"x-sim-fault": "status=500"})
    breaker.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    # Refusals: the limiter (no wait allowed) and a budget (its worst case over the limit).
    refusing = _client(sim, recorder, Config(
        limits=LimitConfig(requests_per_window=1, tokens_per_window=10**7, window_seconds=60.0, max_wait_seconds=0.0,
                           learn_from_headers=False),
        cost=CostConfig(budgets=parse_rules("api_key/day=0.001"))))
    refusing.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    with pytest.raises(ThrottleTimeout):
        refusing.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    with pytest.raises(BudgetExceeded):
        refusing.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8000)
    # A predicted output (the predictor learns from settled calls; two are enough with min_samples=2).
    predicting = protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-names", max_retries=0),
                         pipeline=Pipeline(Config(), recorder, predictor=OutputPredictor(min_samples=2)))
    for _ in range(3):
        predicting.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
    # The documented fallback estimate (an encoding tiktoken does not have): the degraded-telemetry event.
    _client(sim, recorder, Config(default_encoding="no_such_encoding")).chat.completions.create(
        model="my-own-model", messages=MESSAGES, max_tokens=5)
    # A background Responses stream cut and resumed (GET, by sequence number); then streams continued from
    # their checkpoints (chat, and background Responses): the resume_checkpoint spans.
    streaming = StreamConfig(force_background=True, checkpoint_dir=tmp_path / "names-ck", checkpoint_every_chunks=10)
    background = _client(sim, recorder, Config(streaming=streaming))
    _drain(background.responses.create(model=MODEL, input="A long story.", stream=True, extra_headers={
        "x-sim-output-tokens": "60", "x-sim-fault": "cut_after=20", "x-sim-fault-once": f"names-bg-{tmp_path.name}"}))
    one_shot = _client(sim, recorder, Config(streaming=StreamConfig(
        force_background=True, checkpoint_dir=tmp_path / "names-ck", checkpoint_every_chunks=10, resume=False,
        checkpoint_replay_headers=("x-sim-output-tokens",))))
    for i, create in enumerate((
        lambda h: one_shot.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=h),
        lambda h: one_shot.responses.create(model=MODEL, input="Another story.", stream=True, extra_headers=h),
    )):
        checkpoint_id = _drain(create({"x-sim-output-tokens": "60", "x-sim-fault": "cut_after=25",
                                       "x-sim-fault-once": f"names-ck{i}-{tmp_path.name}"}))
        assert checkpoint_id
        assert resume(one_shot, checkpoint_id).text


def test_every_span_event_attribute_and_log_name_is_emitted(
    make_simulator: Any, traced: tuple[TracerProvider, InMemorySpanExporter], logs: Collect, tmp_path: Path
) -> None:
    provider, exporter = traced
    sim = make_simulator(rpm=100_000, tpm=100_000_000, window_s=60, seed=3)
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=provider, model_label_cap=4,
                        slow_throttle_seconds=0.1)
    run_workload(sim, recorder, tmp_path, lambda: None)
    run_extras(sim, provider, tmp_path)

    spans = exporter.get_finished_spans()
    span_names = {s.name for s in spans}
    event_names = {e.name for s in spans for e in s.events}
    keys = {k for s in spans for k in (s.attributes or {})} | {k for s in spans for e in s.events
                                                              for k in (e.attributes or {})}
    missing: dict[str, str] = {}
    for const, value in names_of("SPAN_").items():
        if const in TEMPLATES:
            assert value == TEMPLATES[const]
            pattern = re.compile("^" + re.sub(r"\\\{\w+\\\}", r"\\S+", re.escape(value)) + "$")
            if not any(pattern.match(name) for name in span_names):
                missing[const] = value
        elif value not in span_names:
            missing[const] = value
    missing.update({c: v for c, v in names_of("E_").items() if v not in event_names})
    for const, value in names_of("A_").items():
        if const in PREFIXES:
            if not any(k.startswith(value) for k in keys):
                missing[const] = value
        elif value not in keys:
            missing[const] = value
    assert not missing, f"names nothing emitted in this workload: {missing}"

    # Log records: every event, and every field name of names (LOG_*).
    fields = {k for r in logs.records for k in vars(r)}
    seen_events = {getattr(r, n.LOG_EVENT) for r in logs.records if hasattr(r, n.LOG_EVENT)}
    assert set(n.LOG_EVENTS) - seen_events == set()
    log_fields = {c: v for c, v in names_of("LOG_").items() if v not in n.LOG_EVENTS}
    assert {c: v for c, v in log_fields.items() if v not in fields} == {}


def test_a_cut_attempt_ends_error_and_a_get_resumption_is_a_get(
    simulator: Simulator, traced: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    """The attempt that carried the cut stream ends ERROR with error.type (its cause); the continuation is OK."""
    provider, exporter = traced
    client = _client(simulator, Recorder(registry=CollectorRegistry(), tracer_provider=provider), Config())
    _drain(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers={
        "x-sim-output-tokens": "60", "x-sim-fault": "cut_after=20", "x-sim-fault-once": f"cut-{tmp_path.name}"}))
    post = n.SPAN_ATTEMPT.format(method="POST", route="/chat/completions")
    attempts = sorted((s for s in exporter.get_finished_spans() if s.name == post), key=lambda s: s.start_time or 0)
    assert len(attempts) == 2
    cut, continued = attempts
    assert cut.status.status_code is StatusCode.ERROR and cut.status.description == "connection"
    assert cut.attributes is not None and cut.attributes[n.A_ERROR_TYPE] == "connection"
    assert cut.end_time is not None and continued.start_time is not None and cut.end_time <= continued.start_time
    assert continued.status.status_code is StatusCode.UNSET and n.A_ERROR_TYPE not in (continued.attributes or {})
    [call] = [s for s in exporter.get_finished_spans() if s.name == f"chat {MODEL}"]
    assert call.status.status_code is StatusCode.UNSET  # the call itself succeeded: the caller got the whole text
    assert all(a.parent is not None and a.parent.span_id == call.context.span_id for a in attempts)


def _attempt_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(("GET ", "POST "))]


def _assert_get(span: ReadableSpan) -> None:
    assert span.name == n.SPAN_ATTEMPT.format(method="GET", route="/responses/{response_id}")
    attrs = span.attributes or {}
    assert attrs[n.A_HTTP_METHOD] == "GET" and attrs[n.A_URL_TEMPLATE] == "/responses/{response_id}"
    assert attrs[n.A_HTTP_STATUS] == 200 and span.status.status_code is StatusCode.UNSET


def test_a_checkpoint_resumption_by_get_is_named_and_attributed_as_a_get(
    simulator: Simulator, traced: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = traced
    client = _client(simulator, Recorder(registry=CollectorRegistry(), tracer_provider=provider), Config(
        streaming=StreamConfig(force_background=True, checkpoint_dir=tmp_path, checkpoint_every_chunks=5,
                               resume=False)))
    checkpoint_id = _drain(client.responses.create(model=MODEL, input="A story.", stream=True, extra_headers={
        "x-sim-output-tokens": "50", "x-sim-fault": "cut_after=20", "x-sim-fault-once": f"get-{tmp_path.name}"}))
    assert checkpoint_id
    resume(client, checkpoint_id)
    posts = [s for s in _attempt_spans(exporter) if s.name == "POST /responses"]
    gets = [s for s in _attempt_spans(exporter) if s.name.startswith("GET ")]
    assert len(posts) == 1 and posts[0].status.status_code is StatusCode.ERROR
    [get] = gets
    _assert_get(get)
    [operation] = [s for s in exporter.get_finished_spans() if s.name == n.SPAN_RESUME_CHECKPOINT]
    [call] = [s for s in exporter.get_finished_spans() if s.parent is not None
              and s.parent.span_id == operation.context.span_id]
    assert get.parent is not None and get.parent.span_id == call.context.span_id
    assert (operation.attributes or {})[n.A_SEQUENCE] >= 0


def test_an_in_stream_resumption_by_get_is_named_and_attributed_as_a_get(
    simulator: Simulator, traced: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = traced
    client = _client(simulator, Recorder(registry=CollectorRegistry(), tracer_provider=provider),
                     Config(streaming=StreamConfig(force_background=True)))
    assert _drain(client.responses.create(model=MODEL, input="A story.", stream=True, extra_headers={
        "x-sim-output-tokens": "50", "x-sim-fault": "cut_after=20", "x-sim-fault-once": f"ins-{tmp_path.name}"})) \
        is None
    gets = [s for s in _attempt_spans(exporter) if s.name.startswith("GET ")]
    assert len(gets) == 1 and (gets[0].attributes or {})[n.A_HTTP_METHOD] == "GET"
    _assert_get(gets[0])


def test_a_failed_operation_span_ends_error_with_its_type_only(
    simulator: Simulator, traced: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    """``resume()`` of a checkpoint that does not exist: the ``resume_checkpoint`` span ends ERROR with
    ``error.type``; the error's message (which names the id and the folder) stays off the span."""
    provider, exporter = traced
    client = _client(simulator, Recorder(registry=CollectorRegistry(), tracer_provider=provider),
                     Config(streaming=StreamConfig(checkpoint_dir=tmp_path)))
    with pytest.raises(CheckpointNotFound):
        resume(client, "no-such-checkpoint")
    [span] = exporter.get_finished_spans()
    assert span.name == n.SPAN_RESUME_CHECKPOINT and span.status.status_code is StatusCode.ERROR
    assert span.status.description == "CheckpointNotFound"
    assert (span.attributes or {})[n.A_ERROR_TYPE] == "CheckpointNotFound"
    assert (span.attributes or {})[n.A_CHECKPOINT_ID] == "no-such-checkpoint"
    assert not any(str(tmp_path) in str(v) for e in span.events for v in (e.attributes or {}).values())
