"""The trace store's files: OTLP/JSON values, size-bounded rotation, private modes, a reader that survives junk."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from middleware.telemetry.spanstore import LocalSpanExporter
from middleware.telemetry.tracefiles import (
    FILE_NAME,
    TraceFileWriter,
    any_value,
    decode_value,
    default_traces_dir,
    read_store,
    resolve_traces_dir,
)


@pytest.mark.parametrize("value", [True, False, 0, -7, 2**62, 1.5, "text", "", ["a", "b"], [1, 2], [True],
                                   [0.25, 2.0]])
def test_values_round_trip(value: object) -> None:
    encoded = any_value(value)
    assert json.loads(json.dumps(encoded)) == encoded
    assert decode_value(encoded) == value


def test_encodings_follow_otlp_json() -> None:
    assert any_value(3) == {"intValue": "3"}  # 64-bit integers as strings
    assert any_value(True) == {"boolValue": True}  # not an int
    assert any_value(float("nan")) == {"doubleValue": "NaN"}
    assert math.isinf(decode_value(any_value(float("-inf"))))
    assert any_value(b"\x00\x01") == {"bytesValue": "AAE="}
    assert any_value({"k": 1}) == {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "1"}}]}}


def test_default_folder_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MIDDLEWARE_TRACES_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_traces_dir() == tmp_path / "llm-middleware" / "traces"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the spec: relative paths are invalid
    assert default_traces_dir() == Path.home() / ".local" / "state" / "llm-middleware" / "traces"
    monkeypatch.setenv("MIDDLEWARE_TRACES_DIR", str(tmp_path / "env"))
    assert resolve_traces_dir() == tmp_path / "env"
    assert resolve_traces_dir(tmp_path / "arg") == tmp_path / "arg"


def _spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("test")
    for i in range(count):
        with tracer.start_as_current_span(f"call {i}") as span:
            span.set_attribute("i", i)
            span.add_event("e", {"i": i})


def test_rotation_bounds_the_store_and_keeps_the_newest(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "traces"
    exporter = LocalSpanExporter(folder, max_bytes=4000, backups=2)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _spans(provider, 300)
    provider.shutdown()
    files = sorted(p.name for p in folder.iterdir() if p.name.startswith(FILE_NAME))
    assert files == [FILE_NAME, f"{FILE_NAME}.1", f"{FILE_NAME}.2"]
    sizes = [(folder / f).stat().st_size for f in files]
    assert all(s <= 4000 for s in sizes)
    assert sum(sizes) <= 3 * 4000
    names = [s.name for s in read_store(folder).spans]
    assert names[-1] == "call 299"  # the newest are kept, the oldest rotated away
    assert "call 0" not in names
    assert names == sorted(names, key=lambda x: int(x.split()[1]))  # oldest file first, in order
    assert exporter.failed == 0 and exporter.exported == 300
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((folder / f).stat().st_mode) == 0o600 for f in files)


def test_an_existing_file_with_wider_mode_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text("")
    os.chmod(path, 0o644)
    TraceFileWriter(tmp_path).write_lines(['{"resourceSpans":[]}'])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reader_skips_cut_and_foreign_lines(tmp_path: Path) -> None:
    exporter = LocalSpanExporter(tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _spans(provider, 3)
    with open(tmp_path / FILE_NAME, "a") as f:
        f.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "cut"\n')  # a write cut short
        f.write("not json at all\n")
    _spans(provider, 1)
    contents = read_store(tmp_path)
    assert [s.name for s in contents.spans] == ["call 0", "call 1", "call 2", "call 0"]
    assert contents.bad_lines == 2


def test_export_into_an_unusable_folder_fails_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    exporter = LocalSpanExporter(blocker / "traces")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _spans(provider, 2)
    assert exporter.failed == 2 and isinstance(exporter.last_error, OSError)


WRITER = """
import sys
from pathlib import Path
from middleware.telemetry.tracefiles import TraceFileWriter
w = TraceFileWriter(Path(sys.argv[1]), max_bytes=20000, backups=50)
for i in range(300):
    w.write_lines([f'{{"writer": {sys.argv[2]}, "i": {i}, "pad": "{"x" * 200}"}}'])
"""


def test_processes_writing_one_folder_never_interleave_or_lose_lines(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w)]) for w in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    seen = []
    for path in tmp_path.glob(f"{FILE_NAME}*"):
        seen += [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((d["writer"], d["i"]) for d in seen) == [(w, i) for w in range(3) for i in range(300)]
