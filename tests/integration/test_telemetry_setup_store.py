"""The local trace store: where ``setup_telemetry()`` keeps finished spans when no OTLP endpoint is set.

A fresh interpreter per case (OpenTelemetry's global providers are set once per process) makes real
protected calls against the session's simulator over HTTP; the test then reads the store's files with
``json`` alone and checks them against what the SDK itself finished (an in-memory exporter beside the
store), the OTLP/JSON schema (the protobuf definitions of ``ExportTraceServiceRequest``), the file
modes, and where spans go once an OTLP endpoint (a real HTTP receiver) is configured.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from middleware.telemetry import names as n

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini"

APP = """
import json, os, sys
import openai
from opentelemetry import trace
import middleware
from middleware.telemetry import names as n

base_url, mode = sys.argv[1], sys.argv[2]
kwargs = json.loads(sys.argv[3])
memory = None
if mode == "with_memory":
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    memory = InMemorySpanExporter()
    kwargs["span_exporters"] = [memory]
handle = middleware.setup_telemetry(metrics_port=None, **kwargs)
client = middleware.protect(openai.OpenAI(api_key="sk-store-test", base_url=base_url))
msgs = [{"role": "user", "content": "Say hello"}]
client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=20,
                               extra_headers={"x-sim-fault": "status=503", "x-sim-fault-once": os.urandom(8).hex()})
for _ in client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=30, stream=True):
    pass
client.embeddings.create(model="text-embedding-3-small", input=["a"])
handle.shutdown()
report = {"traces_dir": str(handle.traces_dir) if handle.traces_dir else None,
          "failures": handle.failures.counts}
from prometheus_client import REGISTRY
report["telemetry_errors"] = sum(
    s.value for f in REGISTRY.collect() for s in f.samples
    if s.name == n.TELEMETRY_ERRORS.prom_name and s.labels.get(n.L_COMPONENT) == "export_local_traces")
if memory is not None:
    report["memory"] = [{
        "trace_id": format(s.context.trace_id, "032x"), "span_id": format(s.context.span_id, "016x"),
        "parent": format(s.parent.span_id, "016x") if s.parent else "", "name": s.name, "kind": s.kind.value,
        "start": s.start_time, "end": s.end_time, "status": s.status.status_code.value,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()},
        "events": [[e.name, e.timestamp, {k: list(v) if isinstance(v, tuple) else v for k, v in e.attributes.items()}]
                   for e in s.events],
        "resource": dict(s.resource.attributes)} for s in memory.get_finished_spans()]
print(json.dumps(report))
"""


def run_app(base_url: str, tmp_path: Path, mode: str = "plain", kwargs: dict[str, Any] | None = None,
            **env: str) -> dict[str, Any]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_", "XDG_STATE"))}
    full_env["HOME"] = str(tmp_path / "home")  # never the user's own state folder
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", APP, base_url, mode, json.dumps(kwargs or {})],
                         capture_output=True, text=True, timeout=120, env=full_env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def stored_requests(directory: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(directory.glob("spans.jsonl*")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"]["values"]]
    raise AssertionError(f"unexpected AnyValue {v}")


def stored_spans(directory: Path) -> list[dict[str, Any]]:
    """The spans as plain dicts, decoded here with json only (independently of middleware's reader)."""
    spans = []
    for request in stored_requests(directory):
        for rs in request["resourceSpans"]:
            resource = {kv["key"]: _value(kv["value"]) for kv in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    spans.append({
                        "trace_id": s["traceId"], "span_id": s["spanId"], "parent": s.get("parentSpanId", ""),
                        "name": s["name"], "kind": s["kind"] - 1, "start": int(s["startTimeUnixNano"]),
                        "end": int(s["endTimeUnixNano"]), "status": s["status"].get("code", 0),
                        "attributes": {kv["key"]: _value(kv["value"]) for kv in s["attributes"]},
                        "events": [[e["name"], int(e["timeUnixNano"]),
                                    {kv["key"]: _value(kv["value"]) for kv in e["attributes"]}] for e in s["events"]],
                        "resource": resource, "scope": ss["scope"]["name"]})
    return spans


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_store_holds_exactly_the_spans_the_sdk_finished(simulator: Any, tmp_path: Path) -> None:
    traces = tmp_path / "state" / "traces"
    report = run_app(simulator.base_url, tmp_path, "with_memory", {"local_traces": True},
                     MIDDLEWARE_TRACES_DIR=str(traces))
    assert report["traces_dir"] == str(traces)
    stored = stored_spans(traces)
    memory = report["memory"]
    assert len(memory) == 7  # 3 calls, 4 attempts (one retried)
    by_id = {s["span_id"]: s for s in stored}
    assert sorted(by_id) == sorted(s["span_id"] for s in memory)
    for expected in memory:
        got = by_id[expected["span_id"]]
        for key in ("trace_id", "parent", "name", "kind", "start", "end", "status", "attributes", "events",
                    "resource"):
            assert got[key] == expected[key], key
        assert got["scope"] == "middleware"
    names = {s["name"] for s in stored}
    assert n.SPAN_CALL.format(operation="chat", model=MODEL) in names
    retried = [s for s in stored if any(e[0] == n.E_BACKOFF for e in s["events"])]
    assert len(retried) == 1 and retried[0]["attributes"][n.A_ATTEMPTS] == 2


def test_store_lines_are_otlp_json_export_requests(simulator: Any, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    run_app(simulator.base_url, tmp_path, MIDDLEWARE_TRACES_DIR=str(traces))
    requests = stored_requests(traces)
    assert requests
    for request in requests:
        # Every key is a field of the protobuf message (unknown keys are rejected) with a valid JSON type.
        json_format.ParseDict(request, ExportTraceServiceRequest(), ignore_unknown_fields=False)
        for rs in request["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    assert len(s["traceId"]) == 32 and len(s["spanId"]) == 16  # hex, as OTLP/JSON wants
                    int(s["traceId"], 16), int(s["spanId"], 16)
                    assert isinstance(s["startTimeUnixNano"], str) and s["kind"] == 3  # SPAN_KIND_CLIENT


def test_folders_are_created_private_and_files_are_0600(simulator: Any, tmp_path: Path) -> None:
    state = tmp_path / "xdg"
    report = run_app(simulator.base_url, tmp_path, XDG_STATE_HOME=str(state))
    traces = state / "llm-middleware" / "traces"
    assert report["traces_dir"] == str(traces)
    assert mode_of(state) == 0o700 and mode_of(state / "llm-middleware") == 0o700 and mode_of(traces) == 0o700
    files = list(traces.glob("spans.jsonl*"))
    assert files and all(mode_of(f) == 0o600 for f in files)


def test_home_state_folder_is_the_default(simulator: Any, tmp_path: Path) -> None:
    report = run_app(simulator.base_url, tmp_path)
    expected = tmp_path / "home" / ".local" / "state" / "llm-middleware" / "traces"
    assert report["traces_dir"] == str(expected)
    assert len(stored_spans(expected)) == 7


def test_parameter_wins_over_the_environment(simulator: Any, tmp_path: Path) -> None:
    env_dir, param_dir = tmp_path / "from-env", tmp_path / "from-param"
    report = run_app(simulator.base_url, tmp_path, kwargs={"traces_dir": str(param_dir)},
                     MIDDLEWARE_TRACES_DIR=str(env_dir))
    assert report["traces_dir"] == str(param_dir)
    assert len(stored_spans(param_dir)) == 7 and not env_dir.exists()


def test_export_failures_are_counted_and_never_raised(simulator: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    report = run_app(simulator.base_url, tmp_path, MIDDLEWARE_TRACES_DIR=str(blocker / "traces"))
    assert report["failures"].get("local_traces", 0) >= 1  # the calls above all succeeded
    assert report["telemetry_errors"] >= 1


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[str]]]:
    """A real OTLP/HTTP endpoint on 127.0.0.1 that accepts every export and remembers its path."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths
    server.shutdown()
    server.server_close()


def test_with_otlp_spans_go_there_instead(simulator: Any, tmp_path: Path,
                                          otlp_receiver: tuple[str, list[str]]) -> None:
    endpoint, paths = otlp_receiver
    traces = tmp_path / "traces"
    report = run_app(simulator.base_url, tmp_path, MIDDLEWARE_TRACES_DIR=str(traces),
                     OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    assert "/v1/traces" in paths and "/v1/metrics" in paths
    assert report["traces_dir"] is None and not traces.exists()


@pytest.mark.parametrize("how", ["env", "parameter"])
def test_with_otlp_spans_go_to_the_store_as_well_when_asked(simulator: Any, tmp_path: Path,
                                                            otlp_receiver: tuple[str, list[str]], how: str) -> None:
    endpoint, paths = otlp_receiver
    traces = tmp_path / "traces"
    env = {"MIDDLEWARE_TRACES_DIR": str(traces), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    kwargs: dict[str, Any] = {}
    if how == "env":
        env["MIDDLEWARE_TRACES_LOCAL"] = "always"
    else:
        kwargs["local_traces"] = True
    report = run_app(simulator.base_url, tmp_path, kwargs=kwargs, **env)
    assert "/v1/traces" in paths
    assert report["traces_dir"] == str(traces) and len(stored_spans(traces)) == 7


def test_store_can_be_switched_off(simulator: Any, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    report = run_app(simulator.base_url, tmp_path, MIDDLEWARE_TRACES_DIR=str(traces), MIDDLEWARE_TRACES_LOCAL="0")
    assert report["traces_dir"] is None and not traces.exists()
