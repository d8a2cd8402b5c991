"""A span exporter into the local trace store (OTLP/JSON lines, rotating private files).

``setup_telemetry()`` puts it behind a ``BatchSpanProcessor`` when no OTLP endpoint is configured, so
the trace ids in ``/metrics`` exemplars can be opened with ``middleware traces show ID`` without a
tracing backend. Needs the OpenTelemetry SDK (the ``otel`` extra); the format lives in ``tracefiles``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .tracefiles import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, TraceFileWriter, encode_lines


class LocalSpanExporter(SpanExporter):
    """Appends each batch of finished spans to the store; a failure returns FAILURE, never raises."""

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.writer = TraceFileWriter(directory, max_bytes=max_bytes, backups=backups)
        self.directory = directory
        self.exported = 0
        self.failed = 0
        self.last_error: BaseException | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        try:
            lines = encode_lines(list(spans))
            with self._lock:
                self.writer.write_lines(lines)
        except Exception as exc:  # a full disk, a read-only folder, an unencodable value: counted by the caller
            self.failed += 1
            self.last_error = exc
            return SpanExportResult.FAILURE
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._stopped = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
