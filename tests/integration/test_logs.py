"""Logs correlated with traces: one structured record per decision on the ``middleware`` logger.

Real parts only: the openai SDK over HTTP to the simulator (faults by ``x-sim-fault`` headers, a limiter that
binds), the OTel SDK with an in-memory span exporter, and a real ``logging.Handler`` on the ``middleware``
logger. Each record is found by the trace and span ids of the finished spans, and its fields are compared with
the span event (or span attributes) of the same decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client import CollectorRegistry

from middleware import BudgetExceeded, Config, ConfigError, StreamConfig, ThrottleTimeout, protect
from middleware.config import read_env
from middleware.cost import CostConfig, parse_rules
from middleware.errors import StreamInterrupted
from middleware.files import aprocess_files, process_files
from middleware.limits import LimitConfig
from middleware.logconfig import JsonFormatter
from middleware.pipeline import Pipeline
from middleware.retry import RetryConfig
from middleware.simulator import Simulator
from middleware.streaming import aresume, resume
from middleware.telemetry import names as n
from middleware.telemetry.recorder import SLOW_THROTTLE_ENV, Recorder
from tests.fixtures.telemetry import TelemetryKit

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Explain structured logging in detail."}]
LEVELS = {n.LOG_CALL_END: logging.DEBUG, n.LOG_RETRY: logging.INFO, n.LOG_THROTTLE_WAIT: logging.INFO,
          n.LOG_REFUSED: logging.WARNING, n.LOG_BREAKER: logging.WARNING, n.LOG_STALL: logging.WARNING,
          n.LOG_INTERRUPTION: logging.WARNING, n.LOG_CHECKPOINT: logging.DEBUG,
          n.LOG_CHECKPOINT_RESUMED: logging.INFO, n.LOG_FILE_REFUSED: logging.INFO}


class Captured(logging.Handler):
    """A real handler on the ``middleware`` logger keeping every record (and its JSON line)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.json.format(record))

    def of(self, event: str, **ids: str) -> list[logging.LogRecord]:
        """Records of ``event`` whose ``trace_id`` / ``span_id`` are the ones given."""
        return [r for r in self.records if getattr(r, n.LOG_EVENT, None) == event
                and all(getattr(r, k) == v for k, v in ids.items())]


@pytest.fixture
def captured() -> Iterator[Captured]:
    logger = logging.getLogger("middleware")
    handler = Captured()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def ids(span: ReadableSpan) -> dict[str, str]:
    """The ``trace_id`` / ``span_id`` fields a record about ``span`` carries."""
    ctx = span.get_span_context()
    assert ctx is not None
    return {n.LOG_TRACE_ID: format(ctx.trace_id, "032x"), n.LOG_SPAN_ID: format(ctx.span_id, "016x")}


def call_spans(kit: TelemetryKit, stream: bool | None = None) -> list[ReadableSpan]:
    """Finished call spans (``{operation} {model}``), optionally only streamed ones."""
    return [s for s in kit.spans() if s.attributes and n.A_OPERATION in s.attributes and s.name.count(" ") == 1
            and not s.name.startswith(("POST ", "GET ")) and (stream is None or s.attributes.get(n.A_REQUEST_STREAM)
                                                              is stream)]


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def assert_same_fields(record: logging.LogRecord, attributes: dict[str, Any]) -> None:
    """Every attribute of the span event (or span) is a field of the record, with the same value."""
    for key, value in attributes.items():
        got = getattr(record, key, None)
        assert got == (list(value) if isinstance(value, tuple) else value), (key, got, value)


def pipeline_client(sim: Simulator, kit: TelemetryKit, config: Config, *, slow_throttle: float | None = None,
                    api_key: str = "sk-logs-test") -> Any:
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=kit.provider,
                        slow_throttle_seconds=slow_throttle)
    return protect(openai.OpenAI(base_url=sim.base_url, api_key=api_key, max_retries=0),
                   pipeline=Pipeline(config, recorder))


def uninterrupted(sim: Simulator, headers: dict[str, str]) -> str:
    raw = openai.OpenAI(base_url=sim.base_url, api_key="k")
    stream = raw.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, seed=7, extra_headers=headers)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_records_of_a_retried_throttled_stalled_resumed_checkpointed_stream(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured, tmp_path: Path
) -> None:
    """One streamed call meets each decision once at least; every record carries the call span's ids."""
    config = Config(
        # One request per 0.5 s: the stream waits behind a warm-up call, then its retry and its continuations.
        limits=LimitConfig(requests_per_window=1, tokens_per_window=10_000_000, window_seconds=0.5,
                           max_wait_seconds=10.0, learn_from_headers=False),
        retry=RetryConfig(base_delay=0.05, max_delay=0.1),
        streaming=StreamConfig(idle_timeout_seconds=0.3, checkpoint_dir=tmp_path, checkpoint_every_chunks=5,
                               max_resumptions=6),
    )
    client = pipeline_client(simulator, telemetry, config, slow_throttle=0.2)
    length = {"x-sim-output-tokens": "40"}
    expected = uninterrupted(simulator, length)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)  # takes the one request
    faults = {**length, "x-sim-fault": "status=500", "x-sim-fault-once": f"logs-{tmp_path.name}",
              "x-sim-fault-then": "stall_after=15;stall_s=2"}  # the retry and each continuation stall
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, seed=7, extra_headers=faults)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == expected

    [call] = call_spans(telemetry, stream=True)
    mine = ids(call)
    by_event = {event: captured.of(event, **mine) for event in n.LOG_EVENTS}
    missing = [e for e in (n.LOG_CALL_END, n.LOG_RETRY, n.LOG_THROTTLE_WAIT, n.LOG_STALL, n.LOG_INTERRUPTION,
                           n.LOG_RESUMPTION, n.LOG_CHECKPOINT) if not by_event[e]]
    assert not missing, f"no record with the call's ids for {missing}"
    for event, found in by_event.items():
        assert all(r.levelno == LEVELS.get(event, logging.INFO) for r in found), event
        assert all(getattr(r, n.A_OPERATION) == "chat" and getattr(r, n.A_REQUEST_MODEL) == MODEL for r in found)

    # The retry: its reason and delay, as on the backoff span event.
    [retry] = by_event[n.LOG_RETRY]
    [backoff] = events(call, n.E_BACKOFF)
    assert getattr(retry, n.A_REASON) == "server_error" and getattr(retry, n.A_DELAY_SECONDS) > 0
    assert_same_fields(retry, backoff)
    # Throttle waits from 0.2 s on (the span has every decision, waits below the threshold included).
    waits = by_event[n.LOG_THROTTLE_WAIT]
    throttles = [e for e in events(call, n.E_THROTTLE) if e[n.A_WAIT_SECONDS] >= 0.2]
    assert waits and len(waits) == len(throttles)
    for record, event in zip(waits, throttles):
        assert_same_fields(record, event)
        assert getattr(record, n.A_LIMITER_KEY).endswith(":" + MODEL)
    # Stalls, interruptions and resumptions: one each per break, with the fields of their span events.
    stalls, breaks = by_event[n.LOG_STALL], by_event[n.LOG_INTERRUPTION]
    resumed = by_event[n.LOG_RESUMPTION]
    assert len(stalls) == len(breaks) == len(resumed) == len(events(call, n.E_RESUME)) >= 1
    for record, event in zip(stalls, events(call, n.E_STALL)):
        assert_same_fields(record, event)
    for record, event in zip(breaks, events(call, n.E_INTERRUPTION)):
        assert getattr(record, n.A_CAUSE) == "stall"
        assert_same_fields(record, event)
    for record, event in zip(resumed, events(call, n.E_RESUME)):
        assert record.levelno == logging.INFO and getattr(record, n.A_REASON) == n.RESUME_SUCCESS
        assert_same_fields(record, event)
    # Checkpoints written (DEBUG), with the id of the span event and the store's backend.
    checkpoints = by_event[n.LOG_CHECKPOINT]
    assert len(checkpoints) == len(events(call, n.E_CHECKPOINT))
    for record, event in zip(checkpoints, events(call, n.E_CHECKPOINT)):
        assert_same_fields(record, event)
        assert getattr(record, n.LOG_CHECKPOINT_BACKEND) == "directory"
    # The call's end: outcome, duration and the span's end attributes.
    [end] = by_event[n.LOG_CALL_END]
    assert getattr(end, n.LOG_OUTCOME) == n.OUTCOME_SUCCESS and getattr(end, n.LOG_DURATION_SECONDS) > 0.5
    attrs = dict(call.attributes or {})
    shared = {k: attrs[k] for k in (n.A_USAGE_INPUT, n.A_USAGE_OUTPUT, n.A_ATTEMPTS, n.A_STREAM_END, n.A_CHUNKS,
                                    n.A_RESPONSE_ID, n.A_COST_USD)}
    assert_same_fields(end, shared)
    assert getattr(end, n.A_ATTEMPTS) == 2 and not hasattr(end, n.A_ERROR_TYPE)


def test_records_without_a_sampled_span_still_carry_their_fields(
    simulator: Simulator, captured: Captured
) -> None:
    """No tracer provider (the API's no-op): the records are written, with empty ids."""
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key="k", max_retries=0),
                     pipeline=Pipeline(Config(retry=RetryConfig(base_delay=0.01, max_delay=0.02)),
                                       Recorder(registry=CollectorRegistry())))
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                   extra_headers={"x-sim-fault": "status=503", "x-sim-fault-once": "nospan"})
    [retry] = captured.of(n.LOG_RETRY)
    [end] = captured.of(n.LOG_CALL_END)
    for record in (retry, end):
        assert getattr(record, n.LOG_TRACE_ID) == "" and getattr(record, n.LOG_SPAN_ID) == ""
    assert getattr(retry, n.A_REASON) == "server_error" and getattr(end, n.A_ATTEMPTS) == 2


def test_refusals_by_the_limiter_and_by_a_budget_are_warnings(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured
) -> None:
    limited = pipeline_client(simulator, telemetry, Config(limits=LimitConfig(
        requests_per_window=1, tokens_per_window=1_000_000, window_seconds=60.0, max_wait_seconds=0.0,
        learn_from_headers=False)))
    limited.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    with pytest.raises(ThrottleTimeout):
        limited.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    budgeted = pipeline_client(simulator, telemetry, Config(cost=CostConfig(budgets=parse_rules("api_key/day=0.0001"))))
    with pytest.raises(BudgetExceeded):
        budgeted.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4000)

    failed = [s for s in call_spans(telemetry) if (s.attributes or {}).get(n.A_ERROR_TYPE)]
    by_error = {s.attributes[n.A_ERROR_TYPE]: s for s in failed if s.attributes}
    throttle_span, budget_span = by_error["ThrottleTimeout"], by_error["BudgetExceeded"]
    [refused] = captured.of(n.LOG_REFUSED, **ids(throttle_span))
    assert refused.levelno == logging.WARNING
    [event] = [e for e in events(throttle_span, n.E_THROTTLE) if e[n.A_DECISION] == n.DECISION_REFUSED]
    assert_same_fields(refused, event)
    [over] = captured.of(n.LOG_REFUSED, **ids(budget_span))
    assert over.levelno == logging.WARNING and getattr(over, n.A_REASON) == "budget"
    [budget_event] = events(budget_span, n.E_BUDGET)
    assert_same_fields(over, budget_event)
    assert getattr(over, n.A_BUDGET_DECISION) == n.DECISION_REFUSED
    # Both calls ended with a call_end record naming the error type, as their spans do.
    for span, etype in ((throttle_span, "ThrottleTimeout"), (budget_span, "BudgetExceeded")):
        [end] = captured.of(n.LOG_CALL_END, **ids(span))
        assert getattr(end, n.A_ERROR_TYPE) == etype and getattr(end, n.LOG_OUTCOME) == n.OUTCOME_ERROR


def test_breaker_transitions_carry_the_current_span(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured
) -> None:
    """A breaker is shared by calls: its records carry the span current when it changed (here the application's,
    the parent of the call that changed it), and the call that waited for it logs the wait as a retry."""
    retry = RetryConfig(max_attempts=1, breaker_min_calls=3, breaker_open_seconds=0.4, breaker_max_wait_seconds=3.0,
                        budget_enabled=False)
    client = pipeline_client(simulator, telemetry, Config(retry=retry))
    tracer = telemetry.provider.get_tracer("the-application")
    with tracer.start_as_current_span("outage") as app:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                               extra_headers={"x-sim-fault": "status=500"})
    with tracer.start_as_current_span("recovery") as later:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)  # waits, probes, closes it

    def app_ids(span: Any) -> dict[str, str]:
        sc = span.get_span_context()
        return {n.LOG_TRACE_ID: format(sc.trace_id, "032x"), n.LOG_SPAN_ID: format(sc.span_id, "016x")}

    [opened] = captured.of(n.LOG_BREAKER, **app_ids(app))
    assert opened.levelno == logging.WARNING
    assert_same_fields(opened, {n.A_BREAKER_STATE: "open", n.A_URL_TEMPLATE: "/chat/completions",
                                n.A_REQUEST_MODEL: MODEL})
    states = [getattr(r, n.A_BREAKER_STATE) for r in captured.of(n.LOG_BREAKER, **app_ids(later))]
    assert states == ["half_open", "closed"]
    # The recovering call waited for the circuit: a retry record (reason circuit_open) with the call's own ids,
    # next to the circuit-breaker span event on its span.
    [call] = [s for s in call_spans(telemetry) if s.parent is not None and s.parent.span_id == later.get_span_context()
              .span_id]
    [wait] = captured.of(n.LOG_RETRY, **ids(call))
    assert getattr(wait, n.A_REASON) == "circuit_open"
    [breaker_event] = events(call, n.E_BREAKER)
    assert breaker_event[n.A_BREAKER_STATE] == "open"
    assert breaker_event[n.A_WAIT_SECONDS] == getattr(wait, n.A_DELAY_SECONDS)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_continued_from_a_checkpoint(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured, tmp_path: Path, mode: str
) -> None:
    """``resume()``: an INFO record with the ``resume_checkpoint`` span's ids; the continued call is its child."""
    length = {"x-sim-output-tokens": "120"}
    config = Config(streaming=StreamConfig(checkpoint_dir=tmp_path, checkpoint_every_chunks=20, resume=False,
                                           checkpoint_replay_headers=("x-sim-output-tokens",)))
    client = pipeline_client(simulator, telemetry, config)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, seed=7, extra_headers={
        **length, "x-sim-fault": "cut_after=50", "x-sim-fault-once": f"ckpt-{mode}-{tmp_path.name}"})
    with pytest.raises(StreamInterrupted) as info:
        for _ in stream:
            pass
    checkpoint_id = info.value.checkpoint_id
    assert checkpoint_id
    if mode == "sync":
        result = resume(client, checkpoint_id)
    else:
        aclient = protect(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-logs-test", max_retries=0),
                          pipeline=Pipeline(config, Recorder(registry=CollectorRegistry(),
                                                             tracer_provider=telemetry.provider)))
        result = asyncio.run(aresume(aclient, checkpoint_id))
    assert result.text == uninterrupted(simulator, length)

    [span] = telemetry.spans(n.SPAN_RESUME_CHECKPOINT)
    [record] = captured.of(n.LOG_CHECKPOINT_RESUMED, **ids(span))
    assert record.levelno == logging.INFO
    assert_same_fields(record, dict(span.attributes or {}))
    assert getattr(record, n.A_CHECKPOINT_ID) == checkpoint_id and getattr(record, n.A_PARTIAL_CHARS) > 0
    [continued] = [s for s in call_spans(telemetry) if s.parent is not None
                   and s.parent.span_id == span.get_span_context().span_id]
    assert continued.get_span_context().trace_id == span.get_span_context().trace_id
    [end] = captured.of(n.LOG_CALL_END, **ids(continued))
    assert getattr(end, n.LOG_OUTCOME) == n.OUTCOME_SUCCESS


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_refused_files_are_logged_with_the_run_span(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured, tmp_path: Path, mode: str
) -> None:
    """``process_files``: one span for the run (its chunk calls are its children, from worker threads or tasks);
    each refused file an INFO record with the run span's ids and its reason, never its path."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "note.txt").write_text("A short note about logs.\n" * 40)
    (root / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (root / "huge.txt").write_text("words " * 2000)
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=telemetry.provider)
    kw: dict[str, Any] = dict(model=MODEL, root=root, out_dir=tmp_path / "out", max_bytes=4096, max_chunk_tokens=60,
                              concurrency=2, events=recorder)
    if mode == "sync":
        client: Any = protect(openai.OpenAI(base_url=simulator.base_url, api_key="k"),
                              pipeline=Pipeline(Config(), recorder))
        report = process_files("", "Summarise: {chunk}", client, **kw)
    else:
        aclient = protect(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="k"),
                          pipeline=Pipeline(Config(), recorder))
        report = asyncio.run(aprocess_files("", "Summarise: {chunk}", aclient, **kw))
    assert sorted((o.path, o.status, o.reason) for o in report.outcomes) == [
        ("blob.bin", "refused", "binary"), ("huge.txt", "refused", "too_large"), ("note.txt", "done", None)]
    [run] = telemetry.spans(n.SPAN_FILE_PROCESS)
    assert (run.attributes or {})[n.A_FILES] == 3 and len(str((run.attributes or {})[n.A_FILE_ROOT_HASH])) == 12
    calls = call_spans(telemetry)
    note = next(o for o in report.outcomes if o.path == "note.txt")
    assert note.chunks >= 2 and len(calls) == note.chunks
    assert all(c.parent is not None and c.parent.span_id == run.get_span_context().span_id for c in calls)
    refused = captured.of(n.LOG_FILE_REFUSED, **ids(run))
    assert sorted(getattr(r, n.A_REASON) for r in refused) == ["binary", "too_large"]
    assert all(r.levelno == logging.INFO for r in refused)
    assert not any(str(root) in line or "blob.bin" in line for line in captured.lines)  # no paths in records


def test_slow_throttle_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLOW_THROTTLE_ENV, "2.5")
    assert Recorder(registry=CollectorRegistry()).logs.slow_throttle_seconds == 2.5
    assert Recorder(registry=CollectorRegistry(), slow_throttle_seconds=0.1).logs.slow_throttle_seconds == 0.1
    monkeypatch.setenv(SLOW_THROTTLE_ENV, "-1")
    with pytest.raises(ConfigError, match=SLOW_THROTTLE_ENV):
        Recorder(registry=CollectorRegistry())
    monkeypatch.delenv(SLOW_THROTTLE_ENV)
    assert Recorder(registry=CollectorRegistry()).logs.slow_throttle_seconds == read_env(SLOW_THROTTLE_ENV) == 1.0


SECRET_KEY = "sk-logs-secret-7f3a9c"
PROMPT = "the zebra-quartz-lantern prompt that must never reach a log"


def _content_workload(sim: Simulator, kit: TelemetryKit, tmp_path: Path, capture: bool) -> None:
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=kit.provider, capture_content=capture,
                        slow_throttle_seconds=0.0)
    config = Config(retry=RetryConfig(base_delay=0.01, max_delay=0.02),
                    streaming=StreamConfig(checkpoint_dir=tmp_path / f"ck-{capture}", checkpoint_every_chunks=3,
                                           idle_timeout_seconds=0.3),
                    cost=CostConfig(budgets=parse_rules("api_key/day=0.0005")))
    client = protect(openai.OpenAI(base_url=sim.base_url, api_key=SECRET_KEY, max_retries=0),
                     pipeline=Pipeline(config, recorder))
    messages = [{"role": "user", "content": PROMPT}]
    once = f"content-{capture}-{tmp_path.name}"
    stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True, max_tokens=30,
                                            extra_headers={"x-sim-fault": "status=503", "x-sim-fault-once": once,
                                                           "x-sim-fault-then": "cut_after=10"})
    try:  # every continuation is cut too: it ends when the text does or when the resumptions run out
        for _ in stream:
            pass
    except StreamInterrupted:
        pass
    with pytest.raises(BudgetExceeded):
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4000)
    client.responses.create(model=MODEL, input=PROMPT, max_output_tokens=10)
    with pytest.raises(openai.RateLimitError):  # a terminal upstream error whose message echoes the prompt
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5,
                                       extra_headers={"x-sim-fault": f"insufficient_quota;message={PROMPT}"})


def test_no_api_key_and_no_prompt_in_any_record_at_debug(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured, tmp_path: Path
) -> None:
    _content_workload(simulator, telemetry, tmp_path, capture=False)
    events_seen = {getattr(r, n.LOG_EVENT, None) for r in captured.records}
    assert {n.LOG_CALL_END, n.LOG_RETRY, n.LOG_THROTTLE_WAIT, n.LOG_REFUSED, n.LOG_INTERRUPTION, n.LOG_RESUMPTION,
            n.LOG_CHECKPOINT} <= events_seen
    text = "\n".join(captured.lines)
    assert SECRET_KEY not in text and "logs-secret" not in text
    assert "zebra-quartz" not in text
    for record in captured.records:  # every field of every record, JSON or not
        for value in vars(record).values():
            assert SECRET_KEY not in str(value) and "zebra-quartz" not in str(value)


def test_content_reaches_call_end_only_with_content_capture(
    simulator: Simulator, telemetry: TelemetryKit, captured: Captured, tmp_path: Path
) -> None:
    """The same workload with content capture on: call_end then carries the span's message attributes (and the
    check above would have seen them); the API key still appears nowhere."""
    _content_workload(simulator, telemetry, tmp_path, capture=True)
    ends = captured.of(n.LOG_CALL_END)
    with_content = [r for r in ends if "zebra-quartz" in str(getattr(r, n.A_INPUT_MESSAGES, ""))]
    assert with_content and all(getattr(r, n.LOG_EVENT) == n.LOG_CALL_END for r in with_content)
    assert any(getattr(r, n.A_OUTPUT_MESSAGES, None) for r in ends)
    others = [line for line in captured.lines if json.loads(line).get(n.LOG_EVENT) != n.LOG_CALL_END]
    assert others and not any("zebra-quartz" in line for line in others)
    assert not any(SECRET_KEY in line for line in captured.lines)
