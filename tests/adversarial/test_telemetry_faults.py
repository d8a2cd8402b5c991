"""Issue 12.5: telemetry never raises into a call, whatever the OpenTelemetry providers or the registry do.

The providers below raise from every method the API defines, at three depths: the provider itself
(``get_tracer`` / ``get_meter``), the tracer and meter (``start_span``, ``create_*``), and the span and
instruments they hand out (``add_event``, ``set_attribute(s)``, ``set_status``, ``end``,
``record_exception``, ``is_recording``, ``get_span_context``, ``add``/``record``/``set``) -- with spans
that say they record (so every span path runs into the fault), and mixed with spans that raise even when
asked whether they record. They are given to the Recorder explicitly, and, in a child process, as
the global providers. The Prometheus registry raises from ``register`` and ``collect``. Every kind of
call must return what the raw SDK returns for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry import metrics, trace
from prometheus_client import CollectorRegistry

from middleware import Config, StreamConfig, protect
from middleware.pipeline import Pipeline
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Tell me about telemetry that fails."}]
ROOT = Path(__file__).resolve().parents[2]


class TelemetryFault(Exception):
    """Raised by every method of the hostile providers."""


class Calls:
    """How many times a hostile method was entered (to show the faults were reached, not skipped)."""

    count = 0


def _boom(*_: Any, **__: Any) -> Any:
    Calls.count += 1
    raise TelemetryFault("telemetry is broken")


def _hostile(base: type, names: Sequence[str], keep: dict[str, Any] | None = None) -> type:
    """A subclass of ``base`` whose ``names`` (and every abstract method) all raise, except ``keep``."""
    attrs: dict[str, Any] = {name: _boom for name in (*names, *getattr(base, "__abstractmethods__", ()))}
    attrs["__init__"] = lambda self, *args, **kwargs: None  # constructed by the hostile meter itself
    attrs.update(keep or {})
    return type(f"Hostile{base.__name__}", (base,), attrs)


SPAN_METHODS = ("end", "get_span_context", "set_attributes", "set_attribute", "add_event", "add_link",
                "update_name", "is_recording", "set_status", "record_exception", "__enter__", "__exit__")
RaisingSpan = _hostile(trace.Span, SPAN_METHODS)
SAMPLED = trace.SpanContext(trace_id=0x1F, span_id=0x2F, is_remote=False, trace_flags=trace.TraceFlags(1))
# Says it records and hands out a valid context, so that every span path of the recorder runs into the fault.
RecordingRaisingSpan = _hostile(trace.Span, SPAN_METHODS, {"is_recording": lambda self: True,
                                                          "get_span_context": lambda self: SAMPLED})
INSTRUMENT_METHODS = ("add", "record", "set")
INSTRUMENTS = {
    name: _hostile(base, INSTRUMENT_METHODS)
    for name, base in (("counter", metrics.Counter), ("up_down_counter", metrics.UpDownCounter),
                       ("histogram", metrics.Histogram), ("gauge", metrics.Histogram))  # no public Gauge class
}


def _instrument(kind: str) -> Callable[..., Any]:
    def create(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.depth == "meter":
            _boom()
        if kind.startswith("observable"):  # callbacks registered with a meter that then fails on everything
            base = {"observable_counter": metrics.ObservableCounter, "observable_gauge": metrics.ObservableGauge,
                    "observable_up_down_counter": metrics.ObservableUpDownCounter}[kind]
            return _hostile(base, ())(name)
        return INSTRUMENTS[kind](name)

    return create


class HostileMeter(metrics.Meter):
    def __init__(self, depth: str) -> None:
        super().__init__("hostile")
        self.depth = depth

    create_counter = _instrument("counter")
    create_up_down_counter = _instrument("up_down_counter")
    create_histogram = _instrument("histogram")
    create_gauge = _instrument("gauge")
    create_observable_counter = _instrument("observable_counter")
    create_observable_gauge = _instrument("observable_gauge")
    create_observable_up_down_counter = _instrument("observable_up_down_counter")


class HostileTracer(trace.Tracer):
    def __init__(self, depth: str) -> None:
        self.depth = depth

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.depth == "tracer":
            _boom()
        if self.depth == "mixed":  # chat call spans raise even from is_recording(); the other spans say they record
            return (RaisingSpan if name.startswith("chat") else RecordingRaisingSpan)()
        return RecordingRaisingSpan()

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """Like the SDK's (a lazy context manager): fails when entered, or, for mixed, when left."""
        if self.depth == "tracer":
            _boom()
        return LazySpanManager(self.depth)


class LazySpanManager:
    """A context manager that starts its span on ``__enter__`` (as the SDK's does), failing there or on exit."""

    def __init__(self, depth: str) -> None:
        self.depth = depth

    def __enter__(self) -> Any:
        return RecordingRaisingSpan() if self.depth == "mixed" else _boom()

    def __exit__(self, *exc: Any) -> Any:
        return _boom()


class HostileTracerProvider(trace.TracerProvider):
    def __init__(self, depth: str) -> None:
        self.depth = depth

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _boom() if self.depth == "provider" else HostileTracer(self.depth)


class HostileMeterProvider(metrics.MeterProvider):
    def __init__(self, depth: str) -> None:
        self.depth = depth

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        """Raises (provider), or a meter whose create_* raise (tracer), or whose instruments raise (the others)."""
        if self.depth == "provider":
            return _boom()
        return HostileMeter("meter" if self.depth == "tracer" else "instrument")


class HostileRegistry(CollectorRegistry):
    """A registry that refuses our collector and fails every collection (a scrape)."""

    register = _boom
    unregister = _boom
    collect = _boom
    get_sample_value = _boom


DEPTHS = ("provider", "tracer", "recording-span", "mixed")


# ------------------------------------------------------------------------------------------------ the calls
def _headers(fault: str | None = None) -> dict[str, str]:
    headers = {"x-sim-output-tokens": "40"}
    if fault is not None:
        headers.update({"x-sim-fault": fault, "x-sim-fault-once": uuid.uuid4().hex})
    return headers


def _chat_text(result: Any) -> str:
    if isinstance(result, openai.Stream):
        return "".join(c.choices[0].delta.content or "" for c in result if c.choices)
    return str(result.choices[0].message.content)


def sync_calls(client: openai.OpenAI, *, faults: bool) -> dict[str, Any]:
    """Every kind of sync call; with ``faults`` the cut and the 5xx are injected (the raw SDK gets none)."""
    chat = client.chat.completions
    out: dict[str, Any] = {}
    out["chat"] = _chat_text(chat.create(model=MODEL, messages=MESSAGES, seed=1, extra_headers=_headers()))
    out["stream"] = _chat_text(chat.create(model=MODEL, messages=MESSAGES, seed=2, stream=True,
                                           extra_headers=_headers()))
    out["forced_stream"] = _chat_text(chat.create(model=MODEL, messages=MESSAGES, seed=3, max_tokens=500,
                                                  extra_headers=_headers()))
    out["resumed_stream"] = _chat_text(chat.create(model=MODEL, messages=MESSAGES, seed=4, stream=True,
                                                   extra_headers=_headers("cut_after=12" if faults else None)))
    out["retried_5xx"] = _chat_text(chat.create(model=MODEL, messages=MESSAGES, seed=5,
                                                extra_headers=_headers("status=503" if faults else None)))
    out["embeddings"] = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"],
                                                 extra_headers=_headers()).model_dump()["data"]
    out["responses"] = client.responses.create(model=MODEL, input="Say hello", extra_headers=_headers()).output_text
    with client.responses.stream(model=MODEL, input="Say hello twice", extra_headers=_headers()) as events:
        out["responses_stream"] = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    return out


async def async_calls(client: openai.AsyncOpenAI, *, faults: bool) -> dict[str, Any]:
    """Async chat, async stream, and an async stream resumed after a cut."""
    chat = client.chat.completions
    out: dict[str, Any] = {}
    out["async_chat"] = str((await chat.create(model=MODEL, messages=MESSAGES, seed=6,
                                               extra_headers=_headers())).choices[0].message.content)
    for name, fault, seed in (("async_stream", None, 7), ("async_resumed_stream", "cut_after=9", 8)):
        stream = await chat.create(model=MODEL, messages=MESSAGES, seed=seed, stream=True,
                                   extra_headers=_headers(fault if faults else None))
        out[name] = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    return out


def run_all(base_url: str, recorder_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Raw results, protected results (with faults), and what the recorder counted."""
    raw = openai.OpenAI(base_url=base_url, api_key="sk-raw")
    araw = openai.AsyncOpenAI(base_url=base_url, api_key="sk-raw")
    expected = {**sync_calls(raw, faults=False), **asyncio.run(async_calls(araw, faults=False))}
    Calls.count = 0
    recorder = Recorder(**recorder_kwargs)
    pipeline = Pipeline(Config(streaming=StreamConfig(force_stream_above_tokens=100)), recorder)
    got = {**sync_calls(protect(openai.OpenAI(base_url=base_url, api_key="sk-p"), pipeline=pipeline), faults=True),
           **asyncio.run(async_calls(protect(openai.AsyncOpenAI(base_url=base_url, api_key="sk-p"),
                                             pipeline=pipeline), faults=True))}
    families = recorder.m.store.families  # our own store, whatever the OTel side or the registry did
    prometheus = {key: sum(cell.value for cell in families[metric.name].cells.values())
                  for key, metric in (("requests", n.REQUESTS), ("inflight", n.INFLIGHT),
                                      ("streams_active", n.STREAMS_ACTIVE))}
    return {"expected": expected, "got": got, "faults_hit": Calls.count, "telemetry_errors": recorder.telemetry_errors,
            "prometheus": prometheus}


def check(result: dict[str, Any]) -> None:
    assert result["got"] == result["expected"]
    assert all(result["expected"].values())  # every call produced something to compare
    assert result["faults_hit"] > 0 and result["telemetry_errors"] > 0  # the faults were reached and counted
    # The metrics of our own store stay right: every call counted once, nothing left in flight.
    assert result["prometheus"] == {"requests": len(result["expected"]), "inflight": 0, "streams_active": 0}


# ------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("depth", DEPTHS)
def test_every_kind_of_call_succeeds_with_providers_that_raise_everywhere(simulator: Simulator, depth: str) -> None:
    check(run_all(simulator.base_url, {"tracer_provider": HostileTracerProvider(depth),
                                       "meter_provider": HostileMeterProvider(depth),
                                       "registry": CollectorRegistry()}))


def test_a_registry_that_refuses_registration_and_collection_breaks_no_call(simulator: Simulator) -> None:
    check(run_all(simulator.base_url, {"registry": HostileRegistry(),
                                       "tracer_provider": HostileTracerProvider("recording-span")}))


@pytest.mark.parametrize("depth", ["recording-span", "mixed"])
def test_operation_span_never_raises_on_entry_or_exit(depth: str) -> None:
    """The INTERNAL span around larger operations: a tracer whose lazy manager fails at ``__enter__`` or ``__exit__``
    (one failing when called was already handled)."""
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=HostileTracerProvider(depth))
    ran = []
    with recorder.operation_span("process_files", {"a": 1}):
        ran.append(1)
    with pytest.raises(KeyError), recorder.operation_span("process_files", {}):
        raise KeyError("the operation's own error passes through")
    assert ran == [1] and recorder.telemetry_errors >= 2


GLOBAL_SCRIPT = """
import json, sys
from opentelemetry import metrics, trace
from prometheus_client import CollectorRegistry
from tests.adversarial import test_telemetry_faults as t
depth = sys.argv[2]
trace.set_tracer_provider(t.HostileTracerProvider(depth))
metrics.set_meter_provider(t.HostileMeterProvider(depth))
print(json.dumps(t.run_all(sys.argv[1], {"registry": CollectorRegistry()})))
"""


@pytest.fixture(scope="module")
def global_results(_simulator_session: Simulator) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """One child process per depth, with the hostile providers installed as the global ones."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = {depth: subprocess.Popen([sys.executable, "-c", GLOBAL_SCRIPT, _simulator_session.base_url, depth],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for depth in ("provider", "recording-span")}
    yield procs
    for proc in procs.values():
        proc.kill()


@pytest.mark.parametrize("depth", ["provider", "recording-span"])
def test_hostile_global_providers_break_no_call(global_results: dict[str, subprocess.Popen[str]], depth: str) -> None:
    out, err = global_results[depth].communicate(timeout=120)
    assert global_results[depth].returncode == 0, err[-3000:]
    check(json.loads(out.strip().splitlines()[-1]))
