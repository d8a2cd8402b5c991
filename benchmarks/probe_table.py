"""Issue 12's evidence table: every hostile input and fault of the issue (and more), run for real, one row each.

Each probe runs in its own subprocess against one checkout (``PYTHONPATH`` and the working directory are the
checkout, so ``import middleware`` is that checkout's code), with a timeout; a probe that needs an upstream starts
the checkout's own simulator, or a small gateway of its own that behaves like a non-OpenAI upstream; a probe of a
Redis that stalls uses a TCP listener that accepts and never answers; files are real files in a temporary folder.
Each probe classifies what it saw in a short phrase and says whether that meets the expected outcome.

    python benchmarks/probe_table.py                                  # this checkout: probe | expected | observed
    python benchmarks/probe_table.py --checkout /path/to/other/checkout
    python benchmarks/probe_table.py --compare /work/wt/wave1 .       # probe | expected | observed before | after
    python benchmarks/probe_table.py --only hard_link,truncated_json  # some probes (ids: --list)

Use the project's interpreter (the one with the test extra: openai, opentelemetry-sdk, redis, rich, pyyaml) and
``TIKTOKEN_CACHE_DIR`` pointing at tokenizer data. Probes run two at a time (``--jobs``); the table takes a few
minutes. Nothing here imports the package in the parent process: only the probes' subprocesses do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
RESULT_MARK = "PROBE-RESULT "
MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Say hello"}]
MiB = 1024 * 1024

CLASSES = {
    1: "1 secrets",
    2: "2 bounded state",
    3: "3 request bodies",
    4: "4 configuration",
    5: "5 telemetry faults",
    6: "6 stalls",
    7: "7 non-OpenAI upstreams",
    8: "8 files",
    9: "9 CLI and deploy",
    10: "10 simulator",
}


@dataclass(frozen=True)
class Obs:
    """What a probe saw (a short phrase) and whether that is the expected outcome."""

    text: str
    ok: bool


@dataclass(frozen=True)
class Spec:
    """One probe: its id, issue class, what it does, what is expected, the function that runs it, its timeout."""

    id: str
    klass: int
    name: str
    expected: str
    fn: Callable[[], Obs]
    timeout: float
    own: bool  # not in the list


PROBES: list[Spec] = []


def probe(klass: int, name: str, expected: str, *, timeout: float = 60.0,
          own: bool = False) -> Callable[[Callable[[], Obs]], Callable[[], Obs]]:
    """Register a probe function (run in a child process whose ``middleware`` is the checkout's)."""

    def register(fn: Callable[[], Obs]) -> Callable[[], Obs]:
        PROBES.append(Spec(fn.__name__, klass, name, expected, fn, timeout, own))
        return fn

    return register


# ================================================================================================ child-side helpers
def checkout() -> Path:
    return Path(os.environ.get("PROBE_CHECKOUT", str(REPO)))


def short(text: object, limit: int = 70) -> str:
    """One line, at most ``limit`` characters, safe in a Markdown table cell."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def exc_name(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} {status}" if isinstance(status, int) else type(exc).__name__


@contextlib.contextmanager
def simulator(**overrides: Any) -> Iterator[Any]:
    """The checkout's simulator, in a thread of this process."""
    from middleware.simulator import Simulator

    with Simulator(**overrides) as sim:
        yield sim


def sim_requests(sim: Any) -> int:
    """Requests the simulator received (the stats shape differs between versions)."""
    stats = sim.stats()
    if "requests" in stats:
        return int(stats["requests"])
    total = stats.get("total", {})
    return int(total.get("received", total.get("requests", 0)))


def counting_client(base_url: str, *, asynchronous: bool = False, api_key: str = "sk-probe",
                    **kwargs: Any) -> tuple[Any, list[str]]:
    """An SDK client that records every HTTP request it sends (a request hook on its own HTTP client)."""
    import openai

    sent: list[str] = []
    if asynchronous:
        async def ahook(request: Any) -> None:
            sent.append(str(request.url.path))

        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [ahook]})
        return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, http_client=http, **kwargs), sent

    def hook(request: Any) -> None:
        sent.append(str(request.url.path))

    http = openai.DefaultHttpxClient(event_hooks={"request": [hook]})
    return openai.OpenAI(base_url=base_url, api_key=api_key, http_client=http, **kwargs), sent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BlackHole:
    """A TCP listener that accepts every connection, reads nothing back and never answers (a stalled Redis)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


Handler = Callable[[Any, dict[str, Any]], None]


class Gateway:
    """A small HTTP upstream that is not OpenAI: ``respond(handler, body)`` writes whatever answer it likes."""

    def __init__(self, respond: Handler) -> None:
        gateway = self
        self.requests = 0

        class _H(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                gateway.requests += 1
                raw = self.rfile.read(int(self.headers.get("content-length", "0") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                respond(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: Any, status: int, body: bytes, headers: dict[str, str] | None = None,
         content_type: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("content-type", content_type)
    handler.send_header("content-length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def completion_json(model: str = MODEL, content: str = "Hello there.") -> dict[str, Any]:
    return {"id": "chatcmpl-probe", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}


@dataclass(frozen=True)
class Run:
    code: int | None
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(*argv: str, module: str = "middleware", env: dict[str, str] | None = None, timeout: float = 20.0,
            cwd: Path | None = None) -> Run:
    """``python -m MODULE ARGV`` from the checkout, killed (with whatever it started) past ``timeout``."""
    base = dict(os.environ, COLUMNS="250", NO_COLOR="1")
    base.pop("OPENAI_API_KEY", None)
    base.update(env or {})
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=str(cwd or checkout()), env=base,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Run(code, out, err, time.monotonic() - started)


def traceback_type(err: str) -> str:
    """The exception type of the last traceback in ``err``."""
    lines = err[err.rfind("Traceback (most recent call last)"):].splitlines()
    for line in reversed(lines):
        m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Fault))\b", line.strip())
        if m:
            return m.group(1).rsplit(".", 1)[-1]
    return short(lines[-1] if lines else "?", 40)


def describe_cli(run: Run, *needles: str, secret: str | None = None) -> Obs:
    """A user error's outcome: one clear line and a non-zero exit is the expected one."""
    lines = run.err_lines
    if run.code is None:
        return Obs(f"still running after {run.seconds:.0f} s (killed)", False)
    if secret and secret in run.err + run.out:
        return Obs(f"exit {run.code}, shows the secret", False)
    if "Traceback (most recent call last)" in run.err:
        return Obs(f"traceback: {traceback_type(run.err)} (exit {run.code})", False)
    if run.code == 0:
        return Obs("exit 0, no error" + (f": “{short(lines[-1], 50)}”" if lines else ""), False)
    if run.code == 2 and "unrecognized arguments" in run.err:
        return Obs("exit 2, argparse usage: no such option", False)
    if len(lines) == 1:
        missing = [n for n in needles if n not in run.err]
        note = f" (does not name {', '.join(missing)})" if missing else ""
        return Obs(f"exit {run.code}, one line: “{short(lines[0], 60)}”{note}", not missing)
    return Obs(f"exit {run.code}, {len(lines)} stderr lines, last: “{short(lines[-1] if lines else '', 50)}”",
               False)


# ================================================================================================ 1. secrets
SECRET_HEADERS = ("X-Api-Key", "Proxy-Authorization", "X-Gateway-Auth", "Cookie")


def _secret() -> str:
    return f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def _checkpointed_stream(stream_cfg: Any, base_url: str, read: Callable[[], list[str]]) -> tuple[list[str], list[str]]:
    """A stream with credentials in the client's default headers and in the call's own headers (different values);
    what the store holds at chunk 40; which credentials it holds."""
    import openai

    from middleware import Config, protect

    per_call = {name: _secret() for name in SECRET_HEADERS}
    from_client = {name: _secret() for name in SECRET_HEADERS}
    api_key = _secret()
    client = protect(openai.OpenAI(base_url=base_url, api_key=api_key, default_headers=from_client),
                     Config(streaming=stream_cfg))
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "checkpoint me"}], stream=True,
        extra_headers={"x-sim-output-tokens": "80", **per_call, "OpenAI-Project": "proj_probe"})
    stored: list[str] = []
    for i, _ in enumerate(stream):
        if i == 40:
            stored = read()
    stream.close()
    leaked = [f"{n} (per call)" for n, v in per_call.items() if any(v in s for s in stored)]
    leaked += [f"{n} (client)" for n, v in from_client.items() if any(v in s for s in stored)]
    if any(api_key in s for s in stored):
        leaked.append("the API key")
    return stored, leaked


def _leak_obs(stored: list[str], leaked: list[str]) -> Obs:
    if not stored:
        return Obs("no checkpoint written by chunk 40", False)
    if leaked:
        return Obs("credentials stored: " + ", ".join(leaked), False)
    try:
        kept = sorted(json.loads(stored[0]).get("headers", {}))
    except (ValueError, AttributeError):
        kept = []
    return Obs("no credential stored" + (f" (headers kept: {', '.join(kept)})" if kept else ""), True)


@probe(1, "stream checkpoint (directory) of a call with X-Api-Key, Proxy-Authorization, X-Gateway-Auth headers",
       "no credential stored (allow-listed headers only)")
def checkpoint_headers_dir() -> Obs:
    from middleware import StreamConfig

    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ck"
        cfg = StreamConfig(checkpoint_dir=folder, checkpoint_every_chunks=10)
        stored, leaked = _checkpointed_stream(cfg, sim.base_url,
                                              lambda: [p.read_text() for p in folder.glob("*.json")])
    return _leak_obs(stored, leaked)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A real redis-server on a free port, no persistence; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


@probe(1, "the same, checkpoints in a real Redis", "no credential stored (allow-listed headers only)", own=True)
def checkpoint_headers_redis() -> Obs:
    import redis

    from middleware import StreamConfig

    with simulator() as sim, redis_server() as url:
        conn = redis.Redis.from_url(url)
        cfg = StreamConfig(checkpoint_redis_url=url, checkpoint_every_chunks=10)

        def read() -> list[str]:
            return [(conn.get(k) or b"").decode() for k in conn.keys("*checkpoint*")]

        stored, leaked = _checkpointed_stream(cfg, sim.base_url, read)
    return _leak_obs(stored, leaked)


@probe(1, "checkpoint file and new folders created under umask 0", "file 0600, folders 0700")
def checkpoint_modes() -> Obs:
    import openai

    from middleware import Config, StreamConfig, protect

    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "new" / "deeper" / "ck"
        client = protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-probe"),
                         Config(streaming=StreamConfig(checkpoint_dir=folder, checkpoint_every_chunks=10)))
        old = os.umask(0)
        try:
            stream = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                                    extra_headers={"x-sim-output-tokens": "80"})
            files: list[int] = []
            for i, _ in enumerate(stream):
                if i == 40:
                    files = [stat.S_IMODE(p.stat().st_mode) for p in folder.glob("*.json")]
            stream.close()
        finally:
            os.umask(old)
        dirs = sorted({stat.S_IMODE(p.stat().st_mode) for p in (folder.parent.parent, folder.parent, folder)})
    if not files:
        return Obs("no checkpoint written by chunk 40", False)
    text = f"file {' '.join(f'{m:04o}' for m in sorted(set(files)))}, folders {' '.join(f'{m:04o}' for m in dirs)}"
    return Obs(text, set(files) == {0o600} and dirs == [0o700])


PROMPT = "My launch code is Zebra Quasar Nine"


@probe(1, "upstream 400 that echoes the prompt, content capture off: the spans",
       "error type and code on the span, no prompt text")
def span_echo() -> Obs:
    import openai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from middleware import Config, protect
    from middleware.pipeline import Pipeline
    from middleware.telemetry.recorder import Recorder

    os.environ.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)

    def respond(h: Any, body: dict[str, Any]) -> None:
        error = {"error": {"message": f"Bad request for: {PROMPT}", "type": "invalid_request_error",
                           "code": "bad_prompt", "param": None}}
        send(h, 400, json.dumps(error).encode(), {"x-request-id": "req_echo"})

    gw = Gateway(respond)
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=provider, capture_content=False)
    client = protect(openai.OpenAI(base_url=gw.base_url, api_key="sk-probe"), pipeline=Pipeline(Config(), recorder))
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
    except openai.BadRequestError:
        pass
    finally:
        gw.close()
    where: list[str] = []
    texts: list[str] = []
    for span in exporter.get_finished_spans():
        if PROMPT in str(span.status.description):
            where.append("status")
        texts.append(json.dumps(dict(span.attributes), default=str) + str(span.status.description))
        for event in span.events:
            text = json.dumps(dict(event.attributes or {}), default=str)
            texts.append(text)
            if PROMPT in text:
                where.append(f"{event.name} event")
        if PROMPT in json.dumps(dict(span.attributes), default=str):
            where.append("attributes")
    joined = "\n".join(texts)
    if where:
        return Obs("prompt on the span: " + ", ".join(sorted(set(where))), False)
    typed = "BadRequestError" in joined or "invalid_request_error" in joined
    return Obs("no prompt text; error type/code kept" if typed else "no prompt text, no error type either", typed)


@probe(1, "files summarize of a 0600 input under umask 022: result files, manifest and folders",
       "files 0600, folders 0700")
def summarize_outputs_private() -> Obs:
    import openai

    from middleware import protect
    from middleware.files import process_files

    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "diary.txt").write_text("my diary\n")
        os.chmod(root / "sub" / "diary.txt", 0o600)
        out = Path(tmp) / "out"
        old = os.umask(0o022)
        try:
            process_files("", "{chunk}", protect(openai.OpenAI(api_key="sk-probe", base_url=sim.base_url)),
                          model=MODEL, root=root, out_dir=out)
        finally:
            os.umask(old)
        files = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
        dirs = {stat.S_IMODE(p.stat().st_mode) for p in [out, *(p for p in out.rglob("*") if p.is_dir())]}
    text = (f"files {' '.join(f'{m:04o}' for m in sorted(files))}, "
            f"folders {' '.join(f'{m:04o}' for m in sorted(dirs))}")
    return Obs(text, files == {0o600} and dirs == {0o700})


@probe(1, "a gateway answers 200 with a cut JSON body echoing the Authorization header: the caller's error",
       "our error shows no API key", own=True)
def key_in_errors() -> Obs:
    import openai

    from middleware import Config, RetryConfig, protect

    key = _secret()

    def respond(h: Any, body: dict[str, Any]) -> None:
        echo = json.dumps({"error": {"message": f"refused {h.headers.get('authorization')}",
                                     "type": "gateway_error", "param": None}}).encode()[:-8]
        send(h, 200, echo, {"x-request-id": "req_gateway"})

    gw = Gateway(respond)
    client = protect(openai.OpenAI(base_url=gw.base_url, api_key=key),
                     Config(retry=RetryConfig(max_attempts=2, base_delay=0.01, max_delay=0.02)))
    try:
        client.chat.completions.create(model=MODEL, messages=HELLO)
        return Obs("no error raised", False)
    except Exception as exc:
        where = [w for w, text in (("message", str(exc)), ("attributes", repr(vars(exc)))) if key in text]
        if where:
            return Obs(f"{exc_name(exc)}; key in its {' and '.join(where)}", False)
        return Obs(f"{exc_name(exc)}; key redacted", True)
    finally:
        gw.close()


@probe(1, "MIDDLEWARE_RPM set to an API key pasted by mistake", "ConfigError that does not show the key", own=True)
def config_error_key() -> Obs:
    from middleware import Config

    key = _secret()
    try:
        Config.from_env({"MIDDLEWARE_RPM": key})
    except Exception as exc:
        shows = key[:16] in str(exc)
        return Obs(f"{type(exc).__name__}" + (", shows the key" if shows else ", key not shown"),
                   type(exc).__name__ == "ConfigError" and not shows)
    return Obs("accepted", False)


# ================================================================================================ 2. bounded state
def mock_openai(respond: Callable[[Any], Any], **kwargs: Any) -> Any:
    """An ``openai.OpenAI`` whose HTTP transport is ``respond`` (no server, no network)."""
    import httpx2
    import openai

    http = openai.DefaultHttpxClient(transport=httpx2.MockTransport(respond))
    return openai.OpenAI(api_key="sk-probe", base_url="http://upstream.invalid/v1", http_client=http, **kwargs)


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@probe(2, "5 protect() calls x 60 models each: model label values in the shared Prometheus registry",
       "<= 51 (one process-wide cap of 50, plus 'other')")
def model_labels() -> Obs:
    import httpx2
    from prometheus_client import REGISTRY

    from middleware import protect

    def respond(request: Any) -> Any:
        model = json.loads(request.content)["model"]
        return httpx2.Response(200, json=completion_json(model))

    for c in range(5):
        client = protect(mock_openai(respond))
        for m in range(60):
            client.chat.completions.create(model=f"model-{c}-{m}", messages=HELLO)
    values: set[str] = set()
    for family in REGISTRY.collect():
        if "middleware" not in family.name:
            continue
        for sample in family.samples:
            values.update(v for k, v in sample.labels.items() if "model" in k)
    return Obs(f"{len(values)} model label values (300 models)", 0 < len(values) <= 51)


RSS_MODELS = 20_000
RSS_WARM = 5_000
RSS_DEADLINE = 150.0


@probe(2, f"{RSS_MODELS:,} distinct models (capped from the issue's 100k) through one protected client, learned "
       "limits, a 503 every 10th: RSS growth after the first 5,000", "flat (< 8 MB per 10k models)",
       timeout=RSS_DEADLINE + 60)
def rss_models() -> Obs:
    import httpx2

    from middleware import Config, RetryConfig, protect

    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
               "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "200000",
               "x-ratelimit-remaining-tokens": "199000", "x-ratelimit-reset-tokens": "300ms"}
    last_failed = [""]

    def respond(request: Any) -> Any:
        model = json.loads(request.content)["model"]
        if model.endswith("0") and last_failed[0] != model:  # every 10th model: one 503, then the retry succeeds
            last_failed[0] = model
            return httpx2.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}})
        return httpx2.Response(200, json=completion_json(model), headers=headers)

    client = protect(mock_openai(respond), Config(retry=RetryConfig(base_delay=0.001, max_delay=0.002)))
    started = time.monotonic()
    warm = end = 0
    done = 0
    for i in range(RSS_MODELS):
        client.chat.completions.create(model=f"model-{i:06d}", messages=HELLO, max_tokens=20)
        done = i + 1
        if done == RSS_WARM:
            warm = rss_bytes()
        if done > RSS_WARM and time.monotonic() - started > RSS_DEADLINE:
            break
    end = rss_bytes()
    if done <= RSS_WARM:
        return Obs(f"only {done} models within {RSS_DEADLINE:.0f} s", False)
    per_10k = (end - warm) / (done - RSS_WARM) * 10_000 / MiB
    capped = "" if done == RSS_MODELS else f", stopped at {done:,} (time cap)"
    return Obs(f"RSS +{(end - warm) / MiB:.0f} MB from 5k to {done // 1000}k models "
               f"({per_10k:.1f} MB per 10k{capped})", per_10k < 8)


# ================================================================================================ 3. request bodies
def _outcome(run: Callable[[], Any]) -> str:
    import openai

    try:
        result = run()
        if isinstance(result, openai.Stream):
            list(result)
    except Exception as exc:
        return exc_name(exc)
    return "success"


def body_probe(operation: str, kwargs: Callable[[], dict[str, Any]]) -> Obs:
    """The same body through the raw SDK and through protect(): same outcome, sent as often (at most once)."""
    from middleware import protect

    def create(client: Any) -> Callable[[], Any]:
        args = {"model": "text-embedding-3-small" if operation == "embeddings" else MODEL, **kwargs()}
        resource = {"chat": lambda: client.chat.completions, "responses": lambda: client.responses,
                    "embeddings": lambda: client.embeddings}[operation]()
        return lambda: resource.create(**args)

    with simulator() as sim:
        raw, raw_sent = counting_client(sim.base_url, max_retries=0)
        expected = _outcome(create(raw))
        client, sent = counting_client(sim.base_url)
        got = _outcome(create(protect(client)))
    if got == expected and len(sent) == min(len(raw_sent), 1):
        return Obs(f"same as the raw SDK: {expected}, sent {len(sent)}", True)
    return Obs(f"{got}, sent {len(sent)} (raw SDK: {expected}, sent {len(raw_sent)})", False)


def nested_schema(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for i in range(depth):
        node = {"type": "object", "properties": {f"p{i}": node}}
    return node


def _cyclic_message() -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    message["tool_calls"] = [message]
    return message


BODIES: list[tuple[str, str, str, Callable[[], dict[str, Any]], bool]] = [
    ("body_messages_int", "chat", "messages=123", lambda: {"messages": 123}, False),
    ("body_role_int", "chat", "role=123", lambda: {"messages": [{"role": 123, "content": "hi"}]}, False),
    ("body_name_int", "chat", "name=5", lambda: {"messages": [{"role": "user", "content": "hi", "name": 5}]}, False),
    ("body_tools_int", "chat", "tools=5", lambda: {"messages": HELLO, "tools": 5}, False),
    ("body_tool_calls_int", "chat", "tool_calls=5",
     lambda: {"messages": [{"role": "assistant", "content": None, "tool_calls": 5}, *HELLO]}, False),
    ("body_nested_schema", "chat", "a tool schema nested 500 levels", lambda: {"messages": HELLO, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": nested_schema(500)}}]}, False),
    ("body_cycle", "chat", "a message that contains itself (its own tool_calls)",
     lambda: {"messages": [_cyclic_message(), *HELLO]}, True),
    ("body_responses_input", "responses", "Responses input=['hi', 123]", lambda: {"input": ["hi", 123]}, True),
    ("body_embeddings_input", "embeddings", "embeddings input=5", lambda: {"input": 5}, True),
]


def _register_body(pid: str, operation: str, label: str, kwargs: Callable[[], dict[str, Any]], own: bool) -> None:
    def fn() -> Obs:
        return body_probe(operation, kwargs)

    fn.__name__ = pid
    probe(3, f"{label}: protected vs raw SDK", "same outcome as the raw SDK (the API's own answer), sent once",
          own=own)(fn)


for _body in BODIES:
    _register_body(*_body)


# ================================================================================================ 4. configuration
def config_probe(name: str, value: str, read: Callable[[Any], Any], attr: str,
                 zero_expected: bool = False) -> Obs:
    from middleware import Config

    try:
        cfg = Config.from_env({name: value})
    except Exception as exc:
        msg = str(exc)
        if type(exc).__name__ != "ConfigError":
            return Obs(f"bare {type(exc).__name__}: “{short(msg, 45)}”", False)
        parts = [p for p, present in (("the variable", name in msg), ("the value", value in msg),
                                      ("what is allowed", "expected" in msg or "allowed" in msg)) if present]
        return Obs("ConfigError naming " + (", ".join(parts) if parts else "nothing"),
                   name in msg and value in msg and not zero_expected)
    got = read(cfg)
    if zero_expected:
        return Obs(f"{attr} = {got!r}", got == 0)
    return Obs(f"accepted: {attr} = {got!r}", False)


CONFIGS: list[tuple[str, str, str, Callable[[Any], Any], str, bool, bool]] = [
    ("config_force_stream_abc", "MIDDLEWARE_FORCE_STREAM_ABOVE", "abc",
     lambda c: c.streaming.force_stream_above_tokens, "force_stream_above_tokens", False, False),
    ("config_attempts_nan", "MIDDLEWARE_MAX_ATTEMPTS", "nan", lambda c: c.retry.max_attempts, "max_attempts",
     False, False),
    ("config_attempts_inf", "MIDDLEWARE_MAX_ATTEMPTS", "inf", lambda c: c.retry.max_attempts, "max_attempts",
     False, False),
    ("config_max_wait_zero", "MIDDLEWARE_MAX_WAIT_SECONDS", "0", lambda c: c.limits.max_wait_seconds,
     "max_wait_seconds", True, False),
    ("config_idle_negative", "MIDDLEWARE_STREAM_IDLE_TIMEOUT", "-5", lambda c: c.streaming.idle_timeout_seconds,
     "idle_timeout_seconds", False, False),
    ("config_idle_nan", "MIDDLEWARE_STREAM_IDLE_TIMEOUT", "nan", lambda c: c.streaming.idle_timeout_seconds,
     "idle_timeout_seconds", False, False),
    ("config_redis_not_url", "MIDDLEWARE_REDIS_URL", "not-a-url", lambda c: c.limits.redis_url, "redis_url",
     False, False),
    ("config_attempts_fraction", "MIDDLEWARE_MAX_ATTEMPTS", "2.5", lambda c: c.retry.max_attempts, "max_attempts",
     False, True),
    ("config_rpm_arabic_digits", "MIDDLEWARE_RPM", "\u0661\u0662\u0663", lambda c: c.limits.requests_per_window,
     "requests_per_window", False, True),
    ("config_adaptive_maybe", "MIDDLEWARE_ADAPTIVE_STREAMING", "maybe", lambda c: c.streaming.adaptive_threshold,
     "adaptive_threshold", False, True),
]


def _register_config(pid: str, name: str, value: str, read: Callable[[Any], Any], attr: str, zero: bool,
                     own: bool) -> None:
    def fn() -> Obs:
        return config_probe(name, value, read, attr, zero)

    fn.__name__ = pid
    shown = value.encode("unicode_escape").decode() if not value.isascii() else value
    expected = f"{attr} = 0 (fail fast)" if zero else "ConfigError naming the variable, the value, what is allowed"
    probe(4, f"Config.from_env {name}={shown}", expected, own=own)(fn)


for _cfg in CONFIGS:
    _register_config(*_cfg)


# ================================================================================================ 5. telemetry faults
class TelemetryFault(Exception):
    pass


def _boom(*_: Any, **__: Any) -> Any:
    raise TelemetryFault("telemetry is broken")


def hostile_providers(depth: str) -> tuple[Any, Any]:
    """Tracer and meter providers that raise: from ``get_tracer``/``get_meter`` (``provider``), or from every
    method of the spans and instruments they hand out (``objects``: spans that say they record)."""
    from opentelemetry import metrics, trace

    def hostile(base: type, names: Sequence[str], keep: dict[str, Any] | None = None) -> type:
        attrs: dict[str, Any] = {n: _boom for n in (*names, *getattr(base, "__abstractmethods__", ()))}
        attrs["__init__"] = lambda self, *a, **k: None
        attrs.update(keep or {})
        return type(f"Hostile{base.__name__}", (base,), attrs)

    sampled = trace.SpanContext(trace_id=0x1F, span_id=0x2F, is_remote=False, trace_flags=trace.TraceFlags(1))
    span_cls = hostile(trace.Span, ("end", "set_attributes", "set_attribute", "add_event", "add_link", "update_name",
                                    "set_status", "record_exception", "__enter__", "__exit__"),
                       {"is_recording": lambda self: True, "get_span_context": lambda self: sampled})
    instruments = {k: hostile(b, ("add", "record", "set")) for k, b in (
        ("counter", metrics.Counter), ("up_down_counter", metrics.UpDownCounter), ("histogram", metrics.Histogram))}

    class LazyManager:
        def __enter__(self) -> Any:
            return _boom()

        def __exit__(self, *exc: Any) -> Any:
            return _boom()

    class Tracer(trace.Tracer):
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            return span_cls()

        def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
            return LazyManager()

    class Meter(metrics.Meter):
        def __init__(self) -> None:
            super().__init__("hostile")

        def create_counter(self, name: str, *a: Any, **k: Any) -> Any:
            return instruments["counter"](name)

        def create_up_down_counter(self, name: str, *a: Any, **k: Any) -> Any:
            return instruments["up_down_counter"](name)

        def create_histogram(self, name: str, *a: Any, **k: Any) -> Any:
            return instruments["histogram"](name)

        def create_gauge(self, name: str, *a: Any, **k: Any) -> Any:
            return instruments["histogram"](name)

        def create_observable_counter(self, name: str, *a: Any, **k: Any) -> Any:
            return hostile(metrics.ObservableCounter, ())(name)

        def create_observable_gauge(self, name: str, *a: Any, **k: Any) -> Any:
            return hostile(metrics.ObservableGauge, ())(name)

        def create_observable_up_down_counter(self, name: str, *a: Any, **k: Any) -> Any:
            return hostile(metrics.ObservableUpDownCounter, ())(name)

    class TP(trace.TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            return _boom() if depth == "provider" else Tracer()

    class MP(metrics.MeterProvider):
        def get_meter(self, *args: Any, **kwargs: Any) -> Any:
            return _boom() if depth == "provider" else Meter()

    return TP(), MP()


def telemetry_probe(depth: str) -> Obs:
    import openai
    from opentelemetry import metrics, trace

    from middleware import Config, StreamConfig, protect

    tp, mp = hostile_providers(depth)
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    failed: list[str] = []
    with simulator() as sim:
        cfg = Config(streaming=StreamConfig(force_stream_above_tokens=100))
        try:
            client = protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-probe"), cfg)
            protect(openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-probe"), cfg)
        except Exception as exc:
            return Obs(f"protect() raises {type(exc).__name__}", False)
        chat = client.chat.completions

        def aclient() -> Any:  # one per asyncio.run: an async client's connections belong to the loop that made them
            return protect(openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-probe"), cfg)

        async def achat() -> Any:
            return (await aclient().chat.completions.create(model=MODEL, messages=HELLO)).choices[0].message.content

        async def astream() -> Any:
            stream = await aclient().chat.completions.create(model=MODEL, messages=HELLO, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        kinds: dict[str, Callable[[], Any]] = {
            "chat": lambda: chat.create(model=MODEL, messages=HELLO).choices[0].message.content,
            "stream": lambda: "".join(c.choices[0].delta.content or ""
                                      for c in chat.create(model=MODEL, messages=HELLO, stream=True) if c.choices),
            "forced stream": lambda: chat.create(model=MODEL, messages=HELLO,
                                                 max_tokens=500).choices[0].message.content,
            "embeddings": lambda: client.embeddings.create(model="text-embedding-3-small", input="a").data,
            "responses": lambda: client.responses.create(model=MODEL, input="Say hello").output_text,
            "async chat": lambda: asyncio.run(achat()),
            "async stream": lambda: asyncio.run(astream()),
        }
        for kind, call in kinds.items():
            try:
                if not call():
                    failed.append(f"{kind} (empty)")
            except Exception as exc:
                failed.append(f"{kind} ({type(exc).__name__})")
    if failed:
        return Obs(f"{len(failed)}/{len(kinds)} kinds fail: " + ", ".join(failed), False)
    return Obs(f"all {len(kinds)} kinds succeed", True)


@probe(5, "global tracer/meter providers whose get_tracer/get_meter raise; chat, stream, forced stream, embeddings,"
          " Responses, async chat, async stream", "every call succeeds")
def telemetry_provider_raises() -> Obs:
    return telemetry_probe("provider")


@probe(5, "global providers whose every span and instrument method raises (spans say they record); the same calls",
       "every call succeeds")
def telemetry_objects_raise() -> Obs:
    return telemetry_probe("objects")


@probe(5, "setup_telemetry() with its /metrics port already in use", "fails before installing anything, or not at all")
def setup_busy_port() -> Obs:
    from opentelemetry import metrics, trace

    from middleware import setup_telemetry

    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        os.environ.pop(var, None)
    busy = socket.create_server(("127.0.0.1", 0))
    port = int(busy.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MIDDLEWARE_TRACES_DIR"] = tmp
        try:
            setup_telemetry(metrics_port=port)
            raised: BaseException | None = None
        except Exception as exc:
            raised = exc
    installed = [kind for kind, provider in (("tracer", trace.get_tracer_provider()),
                                             ("meter", metrics.get_meter_provider()))
                 if type(provider).__module__.startswith("opentelemetry.sdk")]
    if raised is None:
        return Obs("no error" + (f" ({', '.join(installed)} provider installed)" if installed else ""), True)
    if installed:
        return Obs(f"raises {type(raised).__name__} after installing the global {' and '.join(installed)} provider",
                   False)
    return Obs(f"raises {type(raised).__name__} first; nothing installed", True)


# ================================================================================================ 6. stalls
CHUNKS = 302


def _stream_seconds(client: Any) -> tuple[float, int]:
    started = time.monotonic()
    n = sum(1 for _ in client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, extra_headers={"x-sim-output-tokens": str(CHUNKS - 2)}))
    return time.monotonic() - started, n


@probe(6, "302-chunk stream, checkpoint Redis that accepts and never answers, a checkpoint every 50 chunks",
       "about the stream's time without Redis (< +2 s)")
def checkpoint_redis_stall() -> Obs:
    import openai

    from middleware import Config, StreamConfig, protect

    hole = BlackHole()
    with simulator() as sim:
        plain = protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-probe"))
        base, _ = _stream_seconds(plain)
        client = protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-probe"),
                         Config(streaming=StreamConfig(checkpoint_redis_url=hole.url, checkpoint_every_chunks=50)))
        try:
            took, n = _stream_seconds(client)
        except Exception as exc:
            return Obs(f"stream fails: {exc_name(exc)}", False)
    return Obs(f"{took:.1f} s (without Redis {base:.1f} s), {hole.accepted} connection(s), {n} chunks",
               n == CHUNKS and took - base < 2.0)


async def _loop_pauses(run: Callable[[], Any]) -> tuple[float, float, str]:
    """Longest pause of the event loop while ``run()`` is awaited, its time, its outcome."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.monotonic()
    outcome = "ok"
    try:
        await run()
    except Exception as exc:
        outcome = exc_name(exc)
    took = time.monotonic() - started
    task.cancel()
    pauses = [b - a for a, b in itertools.pairwise(ticks)]
    return max(pauses, default=0.0), took, outcome


def _async_redis_probe(make_config: Callable[[str], Any], calls: int = 5) -> Obs:
    import openai

    from middleware import Config, protect

    hole = BlackHole()
    with simulator() as sim:
        async def run(client: Any) -> None:
            for _ in range(calls):
                await client.chat.completions.create(model=MODEL, messages=HELLO)

        plain = protect(openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-probe"), Config())
        base_pause, base_took, _ = asyncio.run(_loop_pauses(lambda: run(plain)))
        client = protect(openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-probe"), make_config(hole.url))
        pause, took, outcome = asyncio.run(_loop_pauses(lambda: run(client)))
    ok = outcome == "ok" and pause < base_pause + 0.15 and took < base_took + 2.0
    return Obs(f"{outcome}: event loop held up to {pause * 1000:.0f} ms (without Redis {base_pause * 1000:.0f} ms), "
               f"{calls} calls {took:.1f} s", ok)


@probe(6, "async calls, retry state (budget, breaker) in a Redis that never answers: the event loop",
       "never held longer than without Redis (+150 ms); calls succeed")
def retry_redis_async_stall() -> Obs:
    from middleware import Config, RetryConfig

    return _async_redis_probe(lambda url: Config(retry=RetryConfig(redis_url=url)))


@probe(6, "async calls, limiter state in a Redis that never answers: the event loop",
       "never held longer than without Redis (+150 ms); calls succeed", own=True)
def limiter_redis_async_stall() -> Obs:
    from middleware import Config, LimitConfig

    return _async_redis_probe(lambda url: Config(limits=LimitConfig(
        redis_url=url, requests_per_window=10_000, tokens_per_window=10_000_000)))


@probe(6, "10 sync calls, limiter and retry state in a Redis that never answers", "all succeed, < +2 s in total",
       own=True)
def redis_sync_stall() -> Obs:
    import openai

    from middleware import Config, LimitConfig, RetryConfig, protect

    hole = BlackHole()
    with simulator() as sim:
        def run(client: Any) -> tuple[float, str]:
            started = time.monotonic()
            try:
                for _ in range(10):
                    client.chat.completions.create(model=MODEL, messages=HELLO)
            except Exception as exc:
                return time.monotonic() - started, exc_name(exc)
            return time.monotonic() - started, "ok"

        base, _ = run(protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-probe")))
        cfg = Config(limits=LimitConfig(redis_url=hole.url, requests_per_window=10_000, tokens_per_window=10**7),
                     retry=RetryConfig(redis_url=hole.url))
        took, outcome = run(protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-probe"), cfg))
    return Obs(f"{outcome}: {took:.1f} s (without Redis {base:.1f} s)", outcome == "ok" and took < base + 2.0)


# ================================================================================================ 7. upstreams
def _truncating_gateway(cut_first: int) -> Gateway:
    """A gateway answering 200 with valid headers and a JSON body cut short, ``cut_first`` times (then whole)."""
    count = [0]

    def respond(h: Any, body: dict[str, Any]) -> None:
        count[0] += 1
        whole = json.dumps(completion_json(body.get("model", MODEL))).encode()
        payload = whole[: len(whole) // 2] if count[0] <= cut_first else whole
        send(h, 200, payload, {"x-request-id": f"req_probe_{count[0]}"})

    return Gateway(respond)


@probe(7, "a gateway answers 200 with valid headers and a truncated JSON body, every time",
       "typed MalformedResponse (an openai.APIError with status, request id, excerpt), retried")
def truncated_json() -> Obs:
    import openai

    from middleware import Config, RetryConfig, protect

    gw = _truncating_gateway(cut_first=10**9)
    client = protect(openai.OpenAI(base_url=gw.base_url, api_key="sk-probe"),
                     Config(retry=RetryConfig(max_attempts=3, base_delay=0.01, max_delay=0.02)))
    try:
        client.chat.completions.create(model=MODEL, messages=HELLO)
        return Obs("no error raised", False)
    except Exception as exc:
        n = gw.requests
        if not isinstance(exc, openai.APIError):
            return Obs(f"bare {type(exc).__name__} after {n} request(s)", False)
        status = getattr(exc, "status_code", None)
        rid = getattr(exc, "request_id", None)
        excerpt = getattr(exc, "excerpt", None)
        parts = [f"status {status}", f"request id {rid}" if rid else "no request id",
                 f"excerpt {len(excerpt)} chars" if excerpt else "no excerpt"]
        return Obs(f"typed {type(exc).__name__} ({', '.join(parts)}), {n} requests",
                   bool(status and rid and excerpt) and n > 1)
    finally:
        gw.close()


@probe(7, "the same gateway cuts the body once, then answers whole", "retried; the caller gets the answer",
       own=True)
def truncated_json_once() -> Obs:
    import openai

    from middleware import Config, RetryConfig, protect

    gw = _truncating_gateway(cut_first=1)
    client = protect(openai.OpenAI(base_url=gw.base_url, api_key="sk-probe"),
                     Config(retry=RetryConfig(max_attempts=3, base_delay=0.01, max_delay=0.02)))
    try:
        reply = client.chat.completions.create(model=MODEL, messages=HELLO)
        return Obs(f"answer after {gw.requests} requests", reply.choices[0].message.content == "Hello there.")
    except Exception as exc:
        return Obs(f"{exc_name(exc)} after {gw.requests} request(s)", False)
    finally:
        gw.close()


def _sse_gateway(usage_shape: str) -> Gateway:
    """A streaming gateway; with ``include_usage`` it sends usage as LiteLLM does (``empty_choice``: a final chunk
    whose one choice has an empty delta) or on the last content chunk (``last_chunk``)."""

    def respond(h: Any, body: dict[str, Any]) -> None:
        want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-gw", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL}
        usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
        chunks: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                   "content": ""},
                                                              "finish_reason": None}]}]
        for word in ("Hello", " from", " a", " gateway", "."):
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if want_usage and usage_shape == "empty_choice":
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": None}], "usage": usage})
        elif want_usage:
            chunks[-1]["usage"] = usage
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()
        for chunk in chunks:
            h.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()
        h.close_connection = True

    return Gateway(respond)


def usage_probe(shape: str) -> Obs:
    import openai

    from middleware import protect

    gw = _sse_gateway(shape)
    try:
        raw = openai.OpenAI(base_url=gw.base_url, api_key="sk-probe")
        kwargs: dict[str, Any] = {"model": MODEL, "messages": HELLO, "stream": True}
        expected = [c.model_dump() for c in raw.chat.completions.create(**kwargs)]
        client = protect(openai.OpenAI(base_url=gw.base_url, api_key="sk-probe"))
        try:
            got = [c.model_dump() for c in client.chat.completions.create(**kwargs)]
        except Exception as exc:
            return Obs(f"stream fails: {exc_name(exc)}", False)
    finally:
        gw.close()
    if got == expected:
        return Obs(f"the raw SDK's {len(expected)} chunks, unchanged", True)
    extra = len(got) - len(expected)
    if extra:
        return Obs(f"{len(got)} chunks, raw SDK {len(expected)} ({extra:+d}: the usage chunk reaches the caller)",
                   False)
    diff = sum(1 for a, b in zip(got, expected) if a != b)
    usage = sum(1 for c in got if c.get("usage"))
    return Obs(f"{diff} chunk(s) differ from the raw SDK's" + (f" ({usage} carry usage)" if usage else ""), False)


@probe(7, "stream through a gateway that sends the usage chunk with one empty-delta choice (LiteLLM), the "
          "middleware having added include_usage", "the caller sees exactly the raw SDK's chunks")
def litellm_usage_chunk() -> Obs:
    return usage_probe("empty_choice")


@probe(7, "a gateway that puts usage on the last content chunk (include_usage added by the middleware)",
       "the caller sees exactly the raw SDK's chunks", own=True)
def usage_on_last_chunk() -> Obs:
    return usage_probe("last_chunk")


# ================================================================================================ 8. files
def dry(root: Path, out: Path, items: Any = "", **kwargs: Any) -> dict[str, tuple[str, str | None]]:
    from middleware.files import process_files

    report = process_files(items, "{chunk}", None, model=MODEL, root=root, out_dir=out, dry_run=True, **kwargs)
    return {o.path: (o.status, o.reason) for o in report.outcomes}


def _status(entry: tuple[str, str | None] | None) -> str:
    if entry is None:
        return "missing from the report"
    return entry[0] + (f" ({entry[1]})" if entry[1] else "")


@probe(8, "a hard link inside the root to a file outside it (dry run)", "refused (hard_link) unless allowed")
def hard_link() -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (Path(tmp) / "secret.txt").write_text("top secret\n")
        os.link(Path(tmp) / "secret.txt", root / "innocent.txt")
        try:
            entry = dry(root, Path(tmp) / "out").get("innocent.txt")
        except Exception as exc:
            return Obs(f"run aborted: {type(exc).__name__}", False)
    text = _status(entry)
    if entry and entry[0] == "planned":
        text += ": the outside file would be read"
    return Obs(text, entry is not None and entry[0] == "refused" and entry[1] == "hard_link")


@probe(8, "a socket swapped in for a file between the walk and the open (dry run of 3 files)",
       "that file refused, the others planned")
def socket_swapped() -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for name in ("a.txt", "m.txt", "z.txt"):
            (root / name).write_text(f"{name}\n")
        real_open = os.open
        held: list[socket.socket] = []

        def swapping_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            if os.path.basename(os.fspath(path)) == "m.txt" and not held:
                os.unlink(root / "m.txt")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(str(root / "m.txt"))
                held.append(sock)
            return real_open(path, flags, mode, dir_fd=dir_fd)

        os.open = swapping_open  # type: ignore[assignment]
        try:
            outcomes = dry(root, Path(tmp) / "out")
        except Exception as exc:
            return Obs(f"run aborted: {type(exc).__name__}: {short(exc, 40)}", False)
        finally:
            os.open = real_open
            for s in held:
                s.close()
    if not held:
        return Obs("the swap never happened (no open of m.txt)", False)
    others = [outcomes.get(n, ("missing", None))[0] for n in ("a.txt", "z.txt")]
    m = outcomes.get("m.txt")
    return Obs(f"m.txt {_status(m)}; a.txt, z.txt {'/'.join(sorted(set(others)))}",
               m is not None and m[0] == "refused" and others == ["planned", "planned"])


def as_nobody(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child as uid/gid 65534 when root (root ignores mode bits); its JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.write(write_end, json.dumps(fn()).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps({"raised": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(data or b"null")


@probe(8, "an unreadable folder in the tree (run as an unprivileged user, dry run)",
       "reported (refused: permission), the rest planned")
def unreadable_folder() -> Obs:
    import tiktoken

    with contextlib.suppress(Exception):
        tiktoken.get_encoding("o200k_base")  # loaded before the fork (the child cannot read root's caches)
    base = Path(tempfile.mkdtemp(prefix="probe-unreadable-"))
    try:
        os.chmod(base, 0o755)
        (base / "a.txt").write_text("first\n")
        (base / "locked").mkdir()
        (base / "locked" / "f.txt").write_text("x\n")
        (base / "z.txt").write_text("last\n")
        os.chmod(base / "locked", 0)
        result = as_nobody(lambda: {k: list(v) for k, v in dry(base, base / "out").items()})
    finally:
        os.chmod(base / "locked", 0o755)
        shutil.rmtree(base)
    if isinstance(result, dict) and "raised" in result:
        return Obs(f"run aborted: {short(result['raised'], 50)}", False)
    locked = [(k, v) for k, v in result.items() if k.startswith("locked")]
    if not locked:
        return Obs(f"the folder is missing from the report ({len(result)} entries: {', '.join(sorted(result))})",
                   False)
    k, v = locked[0]
    return Obs(f"{k} {_status((v[0], v[1]))}", v[0] == "refused")


@probe(8, "a file and a folder whose paths pass PATH_MAX (dry run)", "both reported (refused: too_long)")
def long_paths() -> Obs:
    path_max = os.pathconf("/", "PC_PATH_MAX")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "a.txt").write_text("first\n")
        segment = "d" * 200
        depth = (path_max - 40 - len(str(root))) // (len(segment) + 1)
        last = path_max - 40 - len(str(root)) - depth * (len(segment) + 1) - 1
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)

        def nest(fd: int, names: list[str]) -> int:
            for name in names:
                os.mkdir(name, dir_fd=fd)
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return fd

        def write_at(fd: int, name: str) -> None:
            out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, b"deep\n")
            os.close(out)

        fd = nest(fd, [segment] * depth + ["e" * last])
        write_at(fd, "n" * 200 + ".txt")
        fd = nest(fd, [segment] * 3)
        write_at(fd, "deep.txt")
        os.close(fd)
        try:
            outcomes = dry(root, Path(tmp) / "out")
        except Exception as exc:
            return Obs(f"run aborted: {type(exc).__name__}", False)
    long_ones = {k: v for k, v in outcomes.items() if len(k) > 1000}
    if not long_ones:
        return Obs(f"both missing from the report ({len(outcomes)} entries)", False)
    reasons = sorted({_status(v) for v in long_ones.values()})
    return Obs(f"{len(long_ones)} of 2 reported: {', '.join(reasons)}",
               len(long_ones) == 2 and all(v[0] == "refused" for v in long_ones.values()))


@probe(8, "process_files of 5 files with a progress callback that raises", "all 5 files done; the errors counted")
def progress_raises() -> Obs:
    import openai

    from middleware import protect
    from middleware.files import process_files

    def hostile(event: Any) -> None:
        raise RuntimeError("progress display crashed")

    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for i in range(5):
            (root / f"doc{i}.txt").write_text(f"Document {i} has one short paragraph.\n")
        client = protect(openai.OpenAI(api_key="sk-probe", base_url=sim.base_url))
        try:
            report = process_files("", "{chunk}", client, model=MODEL, root=root, out_dir=Path(tmp) / "out",
                                   concurrency=3, progress=hostile)
        except Exception as exc:
            return Obs(f"run aborted: {type(exc).__name__}", False)
    done = [o for o in report.outcomes if o.status == "done"]
    counted = getattr(report, "progress_errors", None)
    text = f"{len(done)}/5 files done, {len(report.outcomes)} in the report"
    text += f", {counted} callback errors counted" if counted is not None else ", callback errors not counted"
    return Obs(text, len(done) == 5 and bool(counted))


def _markup_tree(base: Path) -> Path:
    hostile = base / "hostile"
    (hostile / "a[").mkdir(parents=True)
    (hostile / "[red]alert.txt").write_text("markup in the name\n")
    (hostile / "a[" / "bold]tail.txt").write_text("a closing tag in the path\n")
    return hostile


@probe(8, "files summarize --dry-run of files named [red]alert.txt and a[/bold]tail.txt",
       "exit 0, both names printed literally")
def markup_names_dry() -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        run = run_cli("files", "summarize", str(_markup_tree(Path(tmp))), "--dry-run")
    if run.code != 0:
        return describe_cli(run)
    literal = [n for n in ("[red]alert.txt", "a[/bold]tail.txt") if n in run.out]
    if len(literal) == 2:
        return Obs("exit 0, both names literal", True)
    return Obs(f"exit 0, {2 - len(literal)} name(s) read as markup (not shown literally)", False)


@probe(8, "files summarize (real calls, simulator) of a folder holding [/bold]x.txt", "exit 0, name literal")
def markup_crash_after_calls() -> Obs:
    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "docs"
        root.mkdir()
        (root / "a.txt").write_text("A short text.\n")
        (root / "[").mkdir()  # the name's "/" is a path separator: "[/bold]x.txt" is the file bold]x.txt in "["
        (root / "[/bold]x.txt").write_text("A closing tag in the name.\n")
        run = run_cli("files", "summarize", str(root), "--out", str(Path(tmp) / "out"), "--base-url", sim.base_url,
                      env={"OPENAI_API_KEY": "sk-probe"}, timeout=60)
        calls = sim_requests(sim)
    if run.code == 0:
        return Obs(f"exit 0, {calls} API calls" + (", name literal" if "[/bold]x.txt" in run.out else
                                                   ", name not shown literally"), "[/bold]x.txt" in run.out)
    return Obs(f"{describe_cli(run).text}, after {calls} API calls", False)


@probe(8, "files summarize --dry-run of a file whose name holds a terminal escape (ESC[31m)",
       "exit 0, name shown escaped, no ESC byte on the terminal", own=True)
def escape_in_name() -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "docs"
        root.mkdir()
        (root / "esc\x1b[31mred.txt").write_text("a terminal escape in the name\n")
        run = run_cli("files", "summarize", str(root), "--dry-run")
    if run.code != 0:
        return describe_cli(run)
    raw = "\x1b" in run.out
    return Obs("exit 0, raw ESC byte printed" if raw else "exit 0, name escaped", not raw)


@probe(8, "a FIFO, a symlink loop and a dangling symlink in the tree (dry run)",
       "each refused, the regular files planned, no hang", own=True, timeout=40)
def special_files() -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "a.txt").write_text("first\n")
        (root / "loop").symlink_to("loop")
        (root / "dangling").symlink_to(Path(tmp) / "gone")
        os.mkfifo(root / "pipe")
        try:
            outcomes = dry(root, Path(tmp) / "out")
        except Exception as exc:
            return Obs(f"run aborted: {type(exc).__name__}", False)
    parts = [f"{n} {_status(outcomes.get(n))}" for n in ("pipe", "loop", "dangling")]
    ok = outcomes.get("a.txt", ("",))[0] == "planned" and all(
        outcomes.get(n, ("",))[0] == "refused" for n in ("pipe", "loop", "dangling"))
    return Obs("; ".join(parts), ok)


@probe(8, "atomic_write(path, 5)", "TypeError, nothing written")
def atomic_data_int() -> Obs:
    from middleware.files import atomic_write

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.bin"
        try:
            atomic_write(target, 5)  # type: ignore[arg-type]
            raised = None
        except Exception as exc:
            raised = exc
        written = target.read_bytes() if target.exists() else None
        leftovers = sorted(os.listdir(tmp))
    if raised is None:
        return Obs(f"wrote {written!r}", False)
    return Obs(f"{type(raised).__name__}" + (", nothing written" if not leftovers else f", left {leftovers}"),
               isinstance(raised, TypeError) and not leftovers)


@probe(8, "atomic_write of 200 kB onto a full 64 kB tmpfs over an existing file",
       "FileOperationError no_space, the old file intact", timeout=60)
def atomic_full_disk() -> Obs:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return Obs("not run: needs root and unshare to mount a small tmpfs", False)
    with tempfile.TemporaryDirectory() as tmp:
        mnt = Path(tmp) / "small"
        mnt.mkdir()
        script = textwrap.dedent(f"""
            import os
            from middleware.files import atomic_write
            open({str(mnt / 'old.txt')!r}, 'w').write('old')
            try:
                atomic_write({str(mnt / 'old.txt')!r}, b'x' * 200_000)
                print('no-error', sorted(os.listdir({str(mnt)!r})), open({str(mnt / 'old.txt')!r}).read()[:5])
            except Exception as exc:
                print(type(exc).__name__, getattr(exc, 'reason', '-'), sorted(os.listdir({str(mnt)!r})),
                      open({str(mnt / 'old.txt')!r}).read()[:5])
        """)
        mount = f"mount -t tmpfs -o size=64k tmpfs {mnt} && exec {sys.executable} -c \"$0\""
        out = subprocess.run(["unshare", "-m", "sh", "-c", mount, script], capture_output=True, text=True,
                             timeout=50, cwd=str(checkout()))
    words = out.stdout.split()
    if not words:
        return Obs(f"not run: {short(out.stderr, 50)}", False)
    name, reason = words[0], words[1] if len(words) > 1 else "?"
    intact = out.stdout.rstrip().endswith("old")
    text = f"{name} {reason}" + (", old file intact" if intact else ", old file lost")
    return Obs(text, name == "FileOperationError" and reason == "no_space" and intact)


@probe(8, "atomic_write onto a symlink", "refused (symlink); the link and its target untouched")
def atomic_symlink() -> Obs:
    from middleware.files import atomic_write

    with tempfile.TemporaryDirectory() as tmp:
        target, link = Path(tmp) / "target.txt", Path(tmp) / "link.txt"
        target.write_text("original\n")
        link.symlink_to(target)
        try:
            atomic_write(link, "new\n")
            raised = None
        except Exception as exc:
            raised = exc
        is_link, original = link.is_symlink(), target.read_text() == "original\n"
    if raised is None:
        return Obs("symlink replaced by a regular file" if not is_link else "wrote through the symlink", False)
    reason = getattr(raised, "reason", None)
    return Obs(f"{type(raised).__name__} ({reason})" + ("" if is_link and original else ", link or target changed"),
               reason == "symlink" and is_link and original)


# ================================================================================================ 9. CLI and deploy
def _cli_probe(*argv: str, needles: Sequence[str] = (), timeout: float = 20.0, env: dict[str, str] | None = None,
               secret: str | None = None, module: str = "middleware") -> Obs:
    return describe_cli(run_cli(*argv, timeout=timeout, env=env, module=module), *needles, secret=secret)


CLI_EXPECTED = "exit non-zero, one clear line, no traceback"


@probe(9, "middleware simulate --port 99999", CLI_EXPECTED)
def cli_sim_port() -> Obs:
    return _cli_probe("simulate", "--port", "99999", needles=("99999",))


@probe(9, "middleware simulate --fault bogus@0.5", CLI_EXPECTED)
def cli_sim_fault() -> Obs:
    return _cli_probe("simulate", "--port", "0", "--fault", "bogus@0.5", needles=("bogus",))


@probe(9, "middleware simulate --outage abc", CLI_EXPECTED)
def cli_sim_outage() -> Obs:
    return _cli_probe("simulate", "--port", "0", "--outage", "abc", needles=("abc",))


@probe(9, "middleware simulate --config-json '{bad'", CLI_EXPECTED)
def cli_sim_config_json() -> Obs:
    return _cli_probe("simulate", "--port", "0", "--config-json", "{bad", needles=("--config-json",))


@probe(9, "middleware simulate --ttft nan", CLI_EXPECTED, own=True)
def cli_sim_ttft_nan() -> Obs:
    return _cli_probe("simulate", "--port", "0", "--ttft", "nan", needles=("nan",))


@probe(9, "middleware resume ID --redis-url not-a-url", CLI_EXPECTED)
def cli_resume_bad_url() -> Obs:
    return _cli_probe("resume", "abc", "--redis-url", "not-a-url", "--no-progress", needles=("not-a-url",))


@probe(9, "middleware resume ID --redis-url redis://:PASSWORD@127.0.0.1:<closed port>/0", CLI_EXPECTED +
       ", password not shown", timeout=40)
def cli_resume_redis_down() -> Obs:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    return _cli_probe("resume", "abc", "--redis-url", url, "--no-progress", secret="s3cret-pw", timeout=30)


def _corrupt_resume(content: str | None, cid: str) -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{cid}.json"
        if content is None:
            path.mkdir()
        else:
            path.write_text(content)
        return _cli_probe("resume", cid, "--checkpoint-dir", tmp, "--no-progress", "--base-url",
                          f"http://127.0.0.1:{free_port()}/v1", "--api-key", "sk-SECRET-KEY-123",
                          needles=(cid,), secret="sk-SECRET-KEY-123", timeout=30)


@probe(9, "middleware resume of a corrupt checkpoint file ('{corrupt')", CLI_EXPECTED, timeout=40)
def cli_resume_corrupt() -> Obs:
    return _corrupt_resume("{corrupt", "not-json")


@probe(9, "middleware resume of a checkpoint with fields of the wrong types", CLI_EXPECTED, own=True, timeout=40)
def cli_resume_wrong_types() -> Obs:
    return _corrupt_resume(json.dumps({"id": "c1", "operation": "chat", "model": "m", "body": "x",
                                       "expires_at": "soon"}), "wrong-types")


@probe(9, "middleware resume of a checkpoint path that is a folder", CLI_EXPECTED, own=True, timeout=40)
def cli_resume_folder() -> Obs:
    return _corrupt_resume(None, "is-a-folder")


def _summarize_out(out: str, needle: str) -> Obs:
    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        (docs / "a.txt").write_text("A short text.\n")
        (Path(tmp) / "a-file").write_text("not a folder")
        out = out.replace("{tmp}", tmp)
        run = run_cli("files", "summarize", str(docs), "--out", out, "--base-url", sim.base_url,
                      env={"OPENAI_API_KEY": "sk-probe"}, timeout=40)
        calls = sim_requests(sim)
    obs = describe_cli(run, needle)
    return Obs(f"{obs.text}; {calls} API calls", obs.ok and calls == 0)


@probe(9, "middleware files summarize DIR --out <an existing file>", CLI_EXPECTED + ", before any API call",
       timeout=60)
def cli_summarize_out_file() -> Obs:
    return _summarize_out("{tmp}/a-file", "a-file")


@probe(9, "middleware files summarize DIR --out /proc/x", CLI_EXPECTED + ", before any API call", timeout=60)
def cli_summarize_out_proc() -> Obs:
    return _summarize_out("/proc/x", "/proc/x")


@probe(9, "middleware files summarize with MIDDLEWARE_MAX_ATTEMPTS=inf", CLI_EXPECTED, own=True, timeout=60)
def cli_summarize_bad_env() -> Obs:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a.txt").write_text("A short text.\n")
        return _cli_probe("files", "summarize", tmp, "--out", f"{tmp}/out", "--base-url",
                          f"http://127.0.0.1:{free_port()}/v1", needles=("MIDDLEWARE_MAX_ATTEMPTS",),
                          env={"OPENAI_API_KEY": "sk-probe", "MIDDLEWARE_MAX_ATTEMPTS": "inf"}, timeout=40)


@probe(9, "middleware demo --metrics-port 99999", CLI_EXPECTED, timeout=60)
def cli_demo_port() -> Obs:
    return _cli_probe("demo", "--metrics-port", "99999", "--no-progress", needles=("99999",), timeout=45)


@probe(9, "middleware demo --duration -5", CLI_EXPECTED + " (not: runs forever)", timeout=45)
def cli_demo_duration() -> Obs:
    return _cli_probe("demo", "--duration", "-5", "--no-progress", "--metrics-port", "0", needles=("-5",),
                      timeout=30)


@probe(9, "middleware demo with MIDDLEWARE_STREAM_IDLE_TIMEOUT=nan", CLI_EXPECTED, own=True, timeout=60)
def cli_demo_bad_env() -> Obs:
    return _cli_probe("demo", "--duration", "1", "--no-progress", "--metrics-port", "0",
                      needles=("MIDDLEWARE_STREAM_IDLE_TIMEOUT",),
                      env={"MIDDLEWARE_STREAM_IDLE_TIMEOUT": "nan"}, timeout=45)


@probe(9, "python -m dashboards.webhook --port 99999", CLI_EXPECTED, own=True)
def cli_webhook_port() -> Obs:
    return _cli_probe("--port", "99999", module="dashboards.webhook", needles=("99999",))


def _listening(port: int) -> list[str]:
    """Local addresses of the listening TCP sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    found: list[str] = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                addr, hexport = fields[1].split(":")
                if int(hexport, 16) != port or fields[3] != "0A":
                    continue
                if width == 8:
                    found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = bytes.fromhex(addr)
                    found.append(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1]
                                                                             for i in range(0, 16, 4))))
    return found


@probe(9, "python -m dashboards.webhook (default options): the address it listens on", "127.0.0.1 only",
       timeout=45)
def webhook_bind() -> Obs:
    port = free_port()
    base = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "dashboards.webhook", "--port", str(port)], cwd=str(checkout()),
                            env=base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (addresses := _listening(port)):
            if proc.poll() is not None:
                return Obs(f"exits {proc.returncode}: {short((proc.stderr.read() if proc.stderr else ''), 50)}",
                           False)
            if time.monotonic() > deadline:
                return Obs("not listening after 30 s", False)
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return Obs("listens on " + ", ".join(sorted(set(addresses))), set(addresses) <= {"127.0.0.1", "::1"})


@probe(9, "deploy/compose.yaml as docker-compose resolves it: published ports, Redis password, Grafana anonymous",
       "every port on 127.0.0.1; no anonymous Admin")
def compose_defaults() -> Obs:
    import yaml

    compose_file = checkout() / "deploy" / "compose.yaml"
    if shutil.which("docker-compose"):
        out = subprocess.run(["docker-compose", "-f", str(compose_file), "config"], capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            return Obs(f"docker-compose config fails: {short(out.stderr, 50)}", False)
        compose = yaml.safe_load(out.stdout)
    else:
        compose = yaml.safe_load(compose_file.read_text())
    open_ports: list[str] = []
    for name, svc in (compose.get("services") or {}).items():
        for port in svc.get("ports", []) or []:
            host = port.get("host_ip", "") if isinstance(port, dict) else (
                str(port).rsplit(":", 2)[0] if str(port).count(":") >= 2 else "")
            if host not in ("127.0.0.1", "::1", "localhost"):
                open_ports.append(name)
    grafana_env = (compose.get("services", {}).get("grafana", {}) or {}).get("environment", {}) or {}
    if isinstance(grafana_env, list):
        grafana_env = dict(item.split("=", 1) for item in grafana_env)
    anonymous = str(grafana_env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "true"
    role = grafana_env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer") if anonymous else None
    redis_cmd = str((compose.get("services", {}).get("redis", {}) or {}).get("command", ""))
    parts = []
    services = sorted(set(open_ports))
    parts.append(f"on all interfaces: {', '.join(services)}" if services else "every port on 127.0.0.1")
    if "redis" in services and "requirepass" not in redis_cmd:
        parts.append("Redis without password")
    parts.append(f"Grafana anonymous {role}" if anonymous else "Grafana anonymous off")
    return Obs("; ".join(parts), not services and role != "Admin")


# ================================================================================================ 10. simulator
def _head(extra: str) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer test\r\n"
            f"content-type: application/json\r\n{extra}\r\n").encode()


def _answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            part = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not part:
            return data
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                return data
    return data


def _status_of(answer: bytes) -> str:
    if not answer.startswith(b"HTTP/1.1 "):
        return "no answer"
    return answer.split(b" ", 2)[1].decode()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@probe(10, "a 200 MiB chunked request body to the simulator (its own process)",
       "413 past the size limit, peak RSS growth < 128 MB", timeout=120)
def sim_chunked_200mib() -> Obs:
    from middleware.simulator import SimulatorProcess

    with SimulatorProcess() as sim:
        before = _peak_rss(sim.pid)
        sock = socket.create_connection(("127.0.0.1", sim.port))
        chunk = b"%x\r\n%s\r\n" % (MiB, b"a" * MiB)
        sent = [0]

        def push() -> None:
            try:
                sock.sendall(_head("transfer-encoding: chunked\r\n"))
                for _ in range(200):
                    sock.sendall(chunk)
                    sent[0] += 1
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass

        sender = threading.Thread(target=push, daemon=True)
        started = time.monotonic()
        sender.start()
        answer = _answer(sock, timeout=80)
        took = time.monotonic() - started
        sender.join(20)
        sock.close()
        growth = (_peak_rss(sim.pid) - before) / MiB
    status = _status_of(answer)
    return Obs(f"{status} after {sent[0]} MiB sent ({took:.1f} s), peak RSS +{growth:.0f} MB",
               status == "413" and growth < 128)


@probe(10, "a chunk that declares 1 TiB (10000000000 hex)", "413 at once (< 3 s), nothing read", own=True)
def sim_declared_huge_chunk() -> Obs:
    with simulator() as sim, socket.create_connection(("127.0.0.1", sim.port)) as sock:
        started = time.monotonic()
        sock.sendall(_head("transfer-encoding: chunked\r\n") + b"10000000000\r\n" + b"{" * 1000)
        answer = _answer(sock, timeout=8)
        took = time.monotonic() - started
    status = _status_of(answer)
    return Obs(f"{status} after {took:.1f} s" if status != "no answer" else f"no answer within {took:.0f} s",
               status == "413" and took < 3)


@probe(10, "chunk-size lines 1_0, 0x10 and -5 (int(x, 16) takes the first two)", "400 each", own=True)
def sim_chunk_framing() -> Obs:
    got: list[str] = []
    with simulator() as sim:
        for line in (b"1_0", b"0x10", b"-5"):
            with socket.create_connection(("127.0.0.1", sim.port)) as sock:
                sock.sendall(_head("transfer-encoding: chunked\r\n") + line + b"\r\n" + b"{}" + b"\r\n0\r\n\r\n")
                got.append(_status_of(_answer(sock, timeout=5)))
    return Obs(", ".join(f"{line}: {s}" for line, s in zip(("1_0", "0x10", "-5"), got)),
               all(s == "400" for s in got))


@probe(10, "Content-Length: -1 and 1_0", "400 (or 413) each", own=True)
def sim_content_length() -> Obs:
    got: list[str] = []
    with simulator() as sim:
        for value in ("-1", "1_0"):
            with socket.create_connection(("127.0.0.1", sim.port)) as sock:
                sock.sendall(_head(f"content-length: {value}\r\n") + b"{}")
                got.append(_status_of(_answer(sock, timeout=5)))
    return Obs(", ".join(f"{v}: {s}" for v, s in zip(("-1", "1_0"), got)), all(s in ("400", "413") for s in got))


@probe(10, "middleware simulate --rpm -5", CLI_EXPECTED)
def sim_rpm_negative() -> Obs:
    return _cli_probe("simulate", "--port", "0", "--rpm", "-5", needles=("-5",))


@probe(10, "the simulator with no tokenizer data and no network: a chat call", "200, counted by the offline fallback",
       timeout=120)
def sim_no_tokenizer() -> Obs:
    script = textwrap.dedent("""
        import openai
        from middleware.simulator import Simulator
        with Simulator() as sim:
            client = openai.OpenAI(api_key="test", base_url=sim.base_url, max_retries=0)
            try:
                reply = client.chat.completions.create(model="gpt-4o-mini",
                                                       messages=[{"role": "user", "content": "Say hi"}])
                print("RESULT 200", reply.usage.prompt_tokens, reply.usage.completion_tokens)
            except openai.APIStatusError as exc:
                print("RESULT", exc.status_code)
            except Exception as exc:
                print("RESULT", type(exc).__name__)
    """)
    with tempfile.TemporaryDirectory() as empty:
        dead = "http://127.0.0.1:9"
        env = dict(os.environ, TIKTOKEN_CACHE_DIR=empty, HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead,
                   https_proxy=dead, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100, env=env,
                             cwd=str(checkout()))
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if not lines:
        return Obs(f"no answer: {traceback_type(out.stderr) if 'Traceback' in out.stderr else short(out.stderr, 40)}",
                   False)
    words = lines[-1].split()
    if words[1] == "200":
        return Obs(f"200 ({words[2]} prompt, {words[3]} completion tokens)", True)
    return Obs(f"{words[1]}" + (" (server error)" if words[1].startswith("5") else ""), False)


# ================================================================================================ the runner
def child(pid: str) -> None:
    """Run one probe in this process and print its result as the last line."""
    spec = next(s for s in PROBES if s.id == pid)
    import middleware  # the checkout's (PYTHONPATH)

    where = Path(middleware.__file__).resolve()
    if not str(where).startswith(str(checkout().resolve()) + os.sep):
        obs = Obs(f"probe error: middleware imported from {where}, not the checkout", False)
    else:
        try:
            obs = spec.fn()
        except Exception as exc:  # the probe itself could not run there: that is an observation too
            obs = Obs(f"probe could not run: {type(exc).__name__}: {short(exc, 60)}", False)
    sys.stdout.flush()
    print("\n" + RESULT_MARK + json.dumps({"observed": obs.text, "ok": obs.ok}), flush=True)


def run_one(spec: Spec, where: Path, python: str) -> Obs:
    env = dict(os.environ, PYTHONPATH=str(where), PROBE_CHECKOUT=str(where), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken_cache")
    started = time.monotonic()
    proc = subprocess.Popen([python, str(HERE), "--child", spec.id], cwd=str(where), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Obs(f"hangs: no result within {spec.timeout:.0f} s (killed)", False)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the probe left running
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK):])
            return Obs(str(data["observed"]), bool(data["ok"]))
    last = [line for line in err.splitlines() if line.strip()]
    what = traceback_type(err) if "Traceback" in err else (last[-1] if last else f"exit {proc.returncode}")
    return Obs(f"probe process died after {time.monotonic() - started:.0f} s: {short(what, 50)}", False)


def describe_checkout(where: Path, python: str) -> str:
    """``<short sha> (<commit date>)``, plus ``+ local changes`` when the work tree differs; checks the import."""
    env = dict(os.environ, PYTHONPATH=str(where))
    imported = subprocess.run([python, "-c", "import middleware; print(middleware.__file__)"], cwd=str(where),
                              env=env, capture_output=True, text=True, timeout=120).stdout.strip()
    if not imported.startswith(str(where.resolve()) + os.sep):
        raise SystemExit(f"probe_table: import middleware in {where} gives {imported or 'nothing'}, not the checkout")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True).stdout.strip()

    sha, date = git("log", "-1", "--format=%h"), git("log", "-1", "--format=%cd", "--date=format:%Y-%m-%d %H:%M")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "middleware", "dashboards", "deploy")
    return f"{sha} ({date})" + (" + local changes" if dirty else "") if sha else str(where)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(specs: Sequence[Spec], sides: Sequence[dict[str, Obs]], titles: Sequence[str]) -> str:
    head = ["#", "class", "probe", "expected", *titles]
    if len(sides) > 1:
        head.append("met: before → after")
    else:
        head.append("met")
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, spec in enumerate(specs, 1):
        name = spec.name + (" *(not in the issue's list)*" if spec.own else "")
        observed = [cell(side[spec.id].text) for side in sides]
        met = " → ".join("yes" if side[spec.id].ok else "**no**" for side in sides)
        rows.append("| " + " | ".join([str(i), CLASSES[spec.klass], cell(name), cell(spec.expected), *observed,
                                        met]) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--checkout", type=Path, default=REPO, help="the checkout to probe (default: this one)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="probe two checkouts: observed before | observed after")
    parser.add_argument("--only", default="", help="comma-separated probe ids (see --list)")
    parser.add_argument("--jobs", type=int, default=2, help="probes at once (default 2)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the probes (default: this one)")
    parser.add_argument("--json", type=Path, help="also write every observation here")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    specs = [s for s in PROBES if not args.only or s.id in args.only.split(",")]
    if args.list:
        for s in PROBES:
            print(f"{s.id:28} {CLASSES[s.klass]:24} {s.name}")
        return 0
    if not specs:
        parser.error(f"no probe matches --only {args.only}")
    checkouts = [p.resolve() for p in (args.compare or [args.checkout])]
    described = [describe_checkout(p, args.python) for p in checkouts]
    started = time.monotonic()
    results: list[dict[str, Obs]] = [{} for _ in checkouts]
    jobs = [(i, spec) for spec in specs for i in range(len(checkouts))]
    # Longest first: the slow probes do not end up alone at the tail.
    jobs.sort(key=lambda job: -job[1].timeout)
    with ThreadPoolExecutor(max_workers=max(1, min(args.jobs, 2))) as pool:
        futures = {pool.submit(run_one, spec, checkouts[i], args.python): (i, spec) for i, spec in jobs}
        for future, (i, spec) in futures.items():
            results[i][spec.id] = future.result()
            print(f"  [{i}] {spec.id}: {results[i][spec.id].text}", file=sys.stderr, flush=True)
    titles = ["observed before", "observed after"] if args.compare else ["observed"]
    print(table(specs, results, titles))
    print()
    for title, path, desc in zip(["before", "after"] if args.compare else ["probed"], checkouts, described):
        print(f"- {title}: `{path}` at {desc}")
    print(f"- {len(specs)} probes, {time.monotonic() - started:.0f} s, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    if args.json:
        args.json.write_text(json.dumps({
            "checkouts": [{"path": str(p), "commit": d} for p, d in zip(checkouts, described)],
            "probes": [{"id": s.id, "class": s.klass, "probe": s.name, "expected": s.expected, "own": s.own,
                        "observed": [{"text": r[s.id].text, "ok": r[s.id].ok} for r in results]} for s in specs],
        }, indent=2))
    return 0 if all(results[-1][s.id].ok for s in specs) else 1  # 1: a probe of the (last) checkout is not met


if __name__ == "__main__":
    sys.exit(main())
