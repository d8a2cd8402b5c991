"""Issue 12.1 (streaming and telemetry): no credential in a checkpoint, a span, a log record or an error of ours;
checkpoints private to the user; an upstream error that echoes the prompt keeps it off spans unless content
capture is on.

Every secret is a fresh random string, looked for verbatim in everything written: the checkpoint file or Redis
value, every span (name, attributes, events, status, links), every record of the ``middleware`` logger at
DEBUG (message, arguments and extra fields), and the errors the middleware itself raises.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from middleware import Config, ConfigError, RetryConfig, StreamConfig, protect
from middleware.errors import MalformedResponse, MiddlewareError, StreamInterrupted
from middleware.pipeline import Pipeline
from middleware.simulator import Simulator
from middleware.streaming.checkpoint import REDIS_PREFIX
from middleware.telemetry.recorder import Recorder
from tests.fixtures.telemetry import TelemetryKit

MODEL = "gpt-4o-mini"
SECRET_HEADERS = ("X-Api-Key", "Proxy-Authorization", "X-Gateway-Auth", "Authorization", "Cookie")


def secret() -> str:
    return f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def everything_in_spans(spans: Sequence[Any]) -> str:
    """Every string the spans carry, as one text."""
    parts: list[str] = []
    for span in spans:
        parts += [span.name, str(span.status.description), json.dumps(dict(span.attributes), default=str)]
        for event in span.events:
            parts += [event.name, json.dumps(dict(event.attributes), default=str)]
        for link in span.links:
            parts.append(json.dumps(dict(link.attributes or {}), default=str))
    return "\n".join(parts)


class Records(logging.Handler):
    """Every record of the ``middleware`` logger, at DEBUG, rendered with its arguments and extra fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + json.dumps({k: str(v) for k, v in vars(record).items()})
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("middleware")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# ------------------------------------------------------------------------------------------------ checkpoints
def _stream_and_read(client: Any, read: Callable[[], list[Any]], extra_headers: dict[str, str]) -> list[Any]:
    """Consume part of a checkpointed stream, read what the store holds, then finish the stream."""
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "checkpoint me"}], stream=True,
        extra_headers={"x-sim-output-tokens": "80", **extra_headers})
    for i, _ in enumerate(stream):
        if i == 40:
            stored = read()
    stream.close()
    return stored


@pytest.mark.parametrize("backend", ["directory", "redis"])
def test_checkpoints_store_only_allow_listed_headers(
    backend: str, simulator: Simulator, tmp_path: Path, request: pytest.FixtureRequest,
    protect_with: Callable[..., Any],
) -> None:
    from_client = {name: secret() for name in SECRET_HEADERS}
    per_call = {name: secret() for name in SECRET_HEADERS}
    api_key = secret()
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        stream_cfg = StreamConfig(checkpoint_redis_url=url, checkpoint_every_chunks=10)
        conn = redis.Redis.from_url(url)

        def read() -> list[bytes]:
            return [conn.get(k) or b"" for k in conn.keys(REDIS_PREFIX + "*")]
    else:
        stream_cfg = StreamConfig(checkpoint_dir=tmp_path / "ck", checkpoint_every_chunks=10)

        def read() -> list[bytes]:
            return [p.read_bytes() for p in (tmp_path / "ck").glob("*.json")]

    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key=api_key, default_headers=from_client),
                          Config(streaming=stream_cfg))
    stored = _stream_and_read(client, read, {**per_call, "OpenAI-Project": "proj_allowed"})
    assert len(stored) == 1, "one checkpoint of the stream"
    text = stored[0].decode()
    assert json.loads(text)["headers"] == {"OpenAI-Project": "proj_allowed"}  # the allow-list, and only it
    for value in (*from_client.values(), *per_call.values(), api_key):
        assert value not in text


def test_checkpoint_files_and_folders_are_private_whatever_the_umask(
    simulator: Simulator, tmp_path: Path, protect_with: Callable[..., Any],
) -> None:
    folder = tmp_path / "new" / "deeper" / "checkpoints"
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-private"),
                          Config(streaming=StreamConfig(checkpoint_dir=folder, checkpoint_every_chunks=10)))
    old = os.umask(0)  # the most permissive umask: private only if the store makes it so
    try:
        file_modes = _stream_and_read(client, lambda: [stat.S_IMODE(p.stat().st_mode) for p in folder.glob("*.json")],
                                      {})
    finally:
        os.umask(old)
    assert file_modes == [0o600]
    folders = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
               for p in (tmp_path / "new", tmp_path / "new" / "deeper", folder)}
    assert folders == {"new": 0o700, "new/deeper": 0o700, "new/deeper/checkpoints": 0o700}


# ------------------------------------------------------------------------------------------------ spans
PROMPT = "My launch code is Zebra Quasar Nine, never repeat it"


def _echo_fault(operation: str) -> str:
    # An upstream 400 that echoes the prompt in its message and in its code (a ``code`` with spaces).
    return f"status=400;message=Bad request for: {PROMPT};code={PROMPT}"


CALLS: dict[str, Callable[[Any], Any]] = {
    "chat": lambda c: c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                                                extra_headers={"x-sim-fault": _echo_fault("chat")}),
    "stream": lambda c: list(c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True,
        extra_headers={"x-sim-fault": _echo_fault("stream")})),
    "responses": lambda c: c.responses.create(model=MODEL, input=PROMPT,
                                              extra_headers={"x-sim-fault": _echo_fault("responses")}),
}


def _spans_of_a_refused_call(simulator: Simulator, call: str, capture: bool | None) -> tuple[str, Any]:
    """Every string on the spans of one call the upstream refused with an echo of the prompt; the call span."""
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=provider, capture_content=capture)
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key="sk-spans"),
                     pipeline=Pipeline(Config(), recorder))
    with pytest.raises(openai.BadRequestError):
        CALLS[call](client)
    spans = exporter.get_finished_spans()
    [span] = [s for s in spans if s.parent is None]
    return everything_in_spans(spans), span


@pytest.mark.parametrize("call", list(CALLS))
def test_an_upstream_error_echoing_the_prompt_stays_off_spans_without_content_capture(
    call: str, simulator: Simulator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans, _ = _spans_of_a_refused_call(simulator, call, capture=False)
    assert "BadRequestError" in spans and "invalid_request_error" in spans  # the error's type and code are kept
    assert "Zebra Quasar" not in spans
    # The opt-in (in code, or OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true) shows the upstream's
    # message: the scan above would have seen it.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    for capture in (True, None):
        _, span = _spans_of_a_refused_call(simulator, call, capture=capture)
        assert PROMPT in str(span.status.description)
        assert any(PROMPT in str(e.attributes.get("exception.message")) for e in span.events)


# ------------------------------------------------------------------------------------------------ the API key
class EchoGateway(http.server.ThreadingHTTPServer):
    """A gateway that answers 200 with a JSON body cut short, echoing the request's Authorization header."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                body = json.dumps({"error": {"message": f"upstream refused {self.headers.get('authorization')}",
                                             "type": "gateway"}}).encode()[:-8]
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("x-request-id", "req_gateway")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def test_the_api_key_is_in_no_log_span_or_error_of_ours(
    simulator: Simulator, telemetry: TelemetryKit, records: Records, tmp_path: Path,
) -> None:
    key = secret()
    recorder = Recorder(registry=telemetry.registry, tracer_provider=telemetry.provider, capture_content=True)
    cfg = Config(retry=RetryConfig(max_attempts=2, base_delay=0.01, max_delay=0.02),
                 streaming=StreamConfig(max_resumptions=1, checkpoint_dir=tmp_path / "ck", checkpoint_every_chunks=5))
    pipeline = Pipeline(cfg, recorder)
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key=key), pipeline=pipeline)
    ours: list[BaseException] = []
    messages = [{"role": "user", "content": "hello"}]

    def call(**kwargs: Any) -> None:
        try:
            result = client.chat.completions.create(model=MODEL, messages=messages, **kwargs)
            if kwargs.get("stream"):
                list(result)
        except MiddlewareError as exc:  # errors of ours (the SDK's own are the raw SDK's, untouched)
            ours.append(exc)
        except openai.APIError:
            pass

    call()
    call(stream=True, extra_headers={"x-sim-fault": "cut_after=8", "x-sim-fault-once": uuid.uuid4().hex})
    call(stream=True, extra_headers={"x-sim-fault": "cut_after=8"})  # cut again after its one resumption
    call(extra_headers={"x-sim-fault": "status=503"})  # retried, then the SDK's error
    call(extra_headers={"x-sim-fault": f"status=401;message=Incorrect API key provided: {key}"})
    call(extra_headers={"x-sim-fault": f"status=400;code={key}"})
    call(extra_headers={"x-sim-fault": "truncate_body"})
    gateway = EchoGateway()
    try:
        echoing = protect(openai.OpenAI(base_url=gateway.base_url, api_key=key), pipeline=pipeline)
        with pytest.raises(MalformedResponse) as caught:
            echoing.chat.completions.create(model=MODEL, messages=messages)
        ours.append(caught.value)
    finally:
        gateway.shutdown()
        gateway.server_close()
    assert {type(e) for e in ours} == {StreamInterrupted, MalformedResponse}
    malformed = caught.value
    assert "upstream refused Bearer ***" in malformed.excerpt  # the echo is there, the key is not
    for error in ours:
        assert key not in str(error) and key not in repr(vars(error))
    assert records.texts and not [t for t in records.texts if key in t]
    spans = everything_in_spans(telemetry.spans())
    assert "Incorrect API key provided: ***" in spans  # captured (content capture on), with the key redacted
    assert key not in spans


def test_a_config_error_never_shows_an_api_key_pasted_into_a_variable() -> None:
    key = secret()
    for name in ("MIDDLEWARE_REDIS_URL", "MIDDLEWARE_RPM", "MIDDLEWARE_LIMITER_SCOPE"):
        with pytest.raises(ConfigError) as info:
            Config.from_env({name: key})
        assert key not in str(info.value) and key[:20] not in str(info.value)
