"""The local trace store's file format: OTLP/JSON lines in a size-bounded, rotating set of private files.

Each line is one ``ExportTraceServiceRequest`` in the OTLP/JSON encoding (lowerCamelCase keys, hex trace and
span ids, 64-bit integers as decimal strings, enums as integers), so any OTLP/JSON tool can read the store.
The files live in ``$MIDDLEWARE_TRACES_DIR``, else ``$XDG_STATE_HOME/llm-middleware/traces``, else
``~/.local/state/llm-middleware/traces``; folders we create are 0700, files 0600. This module needs no
OpenTelemetry SDK: the writer encodes any object shaped like the SDK's ``ReadableSpan``, and the reader
(``middleware traces``) only parses JSON.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

TRACES_DIR_ENV = "MIDDLEWARE_TRACES_DIR"
TRACES_LOCAL_ENV = "MIDDLEWARE_TRACES_LOCAL"
APP_DIR = "llm-middleware"
FILE_NAME = "spans.jsonl"
LOCK_NAME = ".lock"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_BACKUPS = 4
SPANS_PER_LINE = 64

# OTLP enums: SpanKind (the Python API counts INTERNAL from 0, OTLP from 1 after UNSPECIFIED) and StatusCode.
OTLP_KIND_OFFSET = 1
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


def default_traces_dir() -> Path:
    """``$XDG_STATE_HOME/llm-middleware/traces``, else ``~/.local/state/llm-middleware/traces``."""
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / APP_DIR / "traces"


def resolve_traces_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store's folder: the explicit argument, else ``$MIDDLEWARE_TRACES_DIR``, else the default."""
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    env = os.environ.get(TRACES_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else default_traces_dir()


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents as 0700 folders (existing folders are left as they are)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # the umask may have narrowed it further; never wider
    if not path.is_dir():
        raise NotADirectoryError(f"not a directory: {path}")


# --------------------------------------------------------------------------- encoding (OTLP/JSON)
def any_value(value: Any) -> dict[str, Any]:
    """One attribute value as an OTLP/JSON ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        if math.isinf(value):
            return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": key_values(value)}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def key_values(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Attributes as OTLP/JSON ``KeyValue`` entries."""
    return [{"key": str(k), "value": any_value(v)} for k, v in (attributes or {}).items()]


def _hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def encode_span(span: Any) -> dict[str, Any]:
    """One finished span (shaped like the SDK's ``ReadableSpan``) as an OTLP/JSON ``Span``."""
    ctx = span.context
    out: dict[str, Any] = {
        "traceId": _hex_id(ctx.trace_id, 32),
        "spanId": _hex_id(ctx.span_id, 16),
        "name": span.name,
        "kind": int(getattr(span.kind, "value", 0)) + OTLP_KIND_OFFSET,
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": key_values(span.attributes),
        "events": [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": key_values(e.attributes)}
            for e in span.events
        ],
        "flags": int(ctx.trace_flags) | 0x100,  # W3C flags; bit 8: "has_is_remote" (parent remoteness known)
    }
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    if state:
        out["traceState"] = state
    parent = span.parent
    if parent is not None:
        out["parentSpanId"] = _hex_id(parent.span_id, 16)
        if parent.is_remote:
            out["flags"] |= 0x200
    links = [
        {"traceId": _hex_id(link.context.trace_id, 32), "spanId": _hex_id(link.context.span_id, 16),
         "attributes": key_values(link.attributes)}
        for link in span.links
    ]
    if links:
        out["links"] = links
    for key, attr in (("droppedAttributesCount", "dropped_attributes"), ("droppedEventsCount", "dropped_events"),
                      ("droppedLinksCount", "dropped_links")):
        dropped = int(getattr(span, attr, 0) or 0)
        if dropped:
            out[key] = dropped
    status: dict[str, Any] = {}
    code = int(getattr(span.status.status_code, "value", 0))
    if code:
        status["code"] = code
    if span.status.description:
        status["message"] = span.status.description
    out["status"] = status
    return out


def encode_request(spans: Iterable[Any]) -> dict[str, Any]:
    """Spans as one OTLP/JSON ``ExportTraceServiceRequest`` (grouped by resource, then scope)."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str, str], tuple[Any, list[dict[str, Any]]]]]] = {}
    for span in spans:
        resource = span.resource
        entry = by_resource.setdefault(id(resource), (resource, {}))
        scope = span.instrumentation_scope
        key = (getattr(scope, "name", ""), getattr(scope, "version", "") or "", getattr(scope, "schema_url", "") or "")
        entry[1].setdefault(key, (scope, []))[1].append(encode_span(span))
    resource_spans = []
    for resource, scopes in by_resource.values():
        scope_spans = []
        for (name, version, schema_url), (scope, encoded) in scopes.items():
            item: dict[str, Any] = {"scope": {"name": name, "version": version}, "spans": encoded}
            scope_attrs = getattr(scope, "attributes", None)
            if scope_attrs:
                item["scope"]["attributes"] = key_values(scope_attrs)
            if schema_url:
                item["schemaUrl"] = schema_url
            scope_spans.append(item)
        rs: dict[str, Any] = {"resource": {"attributes": key_values(getattr(resource, "attributes", {}))},
                              "scopeSpans": scope_spans}
        if getattr(resource, "schema_url", ""):
            rs["schemaUrl"] = resource.schema_url
        resource_spans.append(rs)
    return {"resourceSpans": resource_spans}


def encode_lines(spans: Sequence[Any], per_line: int = SPANS_PER_LINE) -> list[str]:
    """Spans as OTLP/JSON lines, at most ``per_line`` spans per request (bounded line length)."""
    return [
        json.dumps(encode_request(spans[i:i + per_line]), separators=(",", ":"), allow_nan=False)
        for i in range(0, len(spans), per_line)
    ]


# --------------------------------------------------------------------------- writing
class TraceFileWriter:
    """Appends lines to ``spans.jsonl`` and rotates it past ``max_bytes`` (``backups`` older files kept).

    Writers in several processes share a folder safely: an ``flock`` on ``.lock`` covers each
    append and rotation. The store never holds more than about ``max_bytes * (backups + 1)``.
    """

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be > 0 and backups >= 0")
        self.directory = directory
        self.max_bytes = max_bytes
        self.backups = backups
        self.path = directory / FILE_NAME

    def _open_private(self, path: Path, flags: int) -> int:
        fd = os.open(path, flags | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _rotate(self) -> None:
        if self.backups == 0:
            os.unlink(self.path)
            return
        oldest = self.directory / f"{FILE_NAME}.{self.backups}"
        if oldest.exists():
            os.unlink(oldest)
        for i in range(self.backups - 1, 0, -1):
            src = self.directory / f"{FILE_NAME}.{i}"
            if src.exists():
                os.replace(src, self.directory / f"{FILE_NAME}.{i + 1}")
        os.replace(self.path, self.directory / f"{FILE_NAME}.1")

    def write_lines(self, lines: Sequence[str]) -> int:
        """Append the lines (rotating first when they would overflow the file); returns bytes written."""
        if not lines:
            return 0
        _ensure_private_dir(self.directory)
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        lock_fd = self._open_private(self.directory / LOCK_NAME, os.O_RDWR)
        try:
            if fcntl is not None:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                size = self.path.stat().st_size if self.path.exists() else 0
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
                fd = self._open_private(self.path, os.O_WRONLY | os.O_APPEND)
                try:
                    view = memoryview(data)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                finally:
                    os.close(fd)
            finally:
                if fcntl is not None:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(lock_fd)
        return len(data)


# --------------------------------------------------------------------------- reading
def decode_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [decode_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return decode_attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def decode_attributes(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` entries as a dict."""
    return {str(e["key"]): decode_value(e.get("value", {})) for e in entries}


@dataclass(frozen=True)
class StoredEvent:
    """A span event read back from the store."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class StoredSpan:
    """A span read back from the store (times in Unix nanoseconds)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: tuple[StoredEvent, ...]
    status_code: int
    status_message: str
    run: tuple[tuple[str, str], ...]
    """The resource's attributes (sorted, values as JSON): one value per process that wrote spans."""

    @property
    def duration_s(self) -> float:
        """Seconds from start to end."""
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def failed(self) -> bool:
        """Status ERROR."""
        return self.status_code == STATUS_ERROR


@dataclass
class StoreContents:
    """Everything read from a store folder."""

    spans: list[StoredSpan] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    bad_lines: int = 0


def store_files(directory: Path) -> list[Path]:
    """The store's files, oldest first (``spans.jsonl.N`` ... ``spans.jsonl.1``, ``spans.jsonl``)."""
    rotated: list[tuple[int, Path]] = []
    if not directory.is_dir():
        return []
    for p in directory.iterdir():
        suffix = p.name.removeprefix(FILE_NAME + ".")
        if p.name.startswith(FILE_NAME + ".") and suffix.isdigit():
            rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    current = directory / FILE_NAME
    if current.exists():
        files.append(current)
    return files


def _decode_request(data: Mapping[str, Any]) -> Iterator[StoredSpan]:
    for rs in data.get("resourceSpans", []):
        resource = decode_attributes(rs.get("resource", {}).get("attributes", []))
        run = tuple(sorted((k, json.dumps(v, default=str)) for k, v in resource.items()))
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                status = s.get("status") or {}
                yield StoredSpan(
                    trace_id=str(s["traceId"]).lower(),
                    span_id=str(s["spanId"]).lower(),
                    parent_span_id=str(s.get("parentSpanId") or "").lower(),
                    name=str(s.get("name", "")),
                    kind=int(s.get("kind", 0)),
                    start_ns=int(s.get("startTimeUnixNano", 0)),
                    end_ns=int(s.get("endTimeUnixNano", 0)),
                    attributes=decode_attributes(s.get("attributes", [])),
                    events=tuple(
                        StoredEvent(str(e.get("name", "")), int(e.get("timeUnixNano", 0)),
                                    decode_attributes(e.get("attributes", [])))
                        for e in s.get("events", [])
                    ),
                    status_code=int(status.get("code", 0)),
                    status_message=str(status.get("message", "")),
                    run=run,
                )


def read_store(directory: Path) -> StoreContents:
    """Every span in the store; unreadable lines (a write cut short, a foreign line) are counted and skipped."""
    contents = StoreContents(files=store_files(directory))
    for path in contents.files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        contents.spans.extend(list(_decode_request(json.loads(line))))
                    except (ValueError, KeyError, TypeError, AttributeError):
                        contents.bad_lines += 1
        except FileNotFoundError:  # rotated away while we read
            continue
    return contents
